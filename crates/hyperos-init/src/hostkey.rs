//! dropbear's SSH host key, kept on the data disk when there is one.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::{Context, Error, Result};
use crate::process::command;

/// The ed25519 host key, in dropbear's format.
pub const HOST_KEY: &str = "/var/lib/hyperos/ssh/dropbear_ed25519_host_key";

/// Creates the host key if missing and returns its public half
/// (`ssh-ed25519 AAAA…`).
pub fn ensure() -> Result<String> {
    let path = Path::new(HOST_KEY);
    if !path.exists() {
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .context(|| format!("could not create {}", dir.display()))?;
        }
        run("dropbearkey", &["-t", "ed25519", "-f", HOST_KEY])?;
    }
    let output = run("dropbearkey", &["-y", "-f", HOST_KEY])?;
    public_key(&output).ok_or_else(|| {
        Error::msg(format!(
            "dropbearkey -y printed no ed25519 key for {HOST_KEY}"
        ))
    })
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = command(program)
        .args(args)
        .output()
        .context(|| format!("could not run {program}"))?;
    if !output.status.success() {
        return Err(Error::msg(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The `ssh-ed25519 <base64>` of `dropbearkey -y`'s output, without comment.
pub fn public_key(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some(kind @ "ssh-ed25519"), Some(blob)) => Some(format!("{kind} {blob}")),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_public_key_line() {
        let output = "Public key portion is:\n\
            ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx root@tabby\n\
            Fingerprint: SHA256:abc\n";
        assert_eq!(
            public_key(output).as_deref(),
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx")
        );
        assert_eq!(public_key("Fingerprint: x\n"), None);
        assert_eq!(public_key("ssh-ed25519\n"), None);
    }
}
