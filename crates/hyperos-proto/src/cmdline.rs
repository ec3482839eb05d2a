//! The kernel command line form of the guest configuration.
//!
//! The 2016 design booted with `host=<hostname> sshkey="<openssh public key>"`
//! and HyperOS still reads it. The kernel leaves `/proc/cmdline` as written,
//! so quoting is resolved here: a double-quoted value may hold spaces (an SSH
//! key with its comment), and quotes may also wrap a whole `key=value` word
//! the way the kernel itself allows (`"sshkey=ssh-ed25519 AAAA… me"`).

use crate::config::GuestConfig;

/// Splits a kernel command line into `(key, value)` words, honouring double
/// quotes as the kernel does. A word without `=` has an empty value.
pub fn words(cmdline: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return out;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next_if(|c| quoted || !c.is_whitespace()) {
            if c == '"' {
                quoted = !quoted;
            } else {
                word.push(c);
            }
        }
        match word.split_once('=') {
            Some((k, v)) => out.push((k.to_owned(), v.to_owned())),
            None => out.push((word, String::new())),
        }
    }
}

/// Reads the `host=` and `sshkey=` parameters of a kernel command line.
///
/// `sshkey=` may appear more than once; every key is kept. Values are not
/// validated here: [`GuestConfig::validate`] does that for both sources.
pub fn parse(cmdline: &str) -> GuestConfig {
    let mut config = GuestConfig::default();
    for (key, value) in words(cmdline) {
        match key.as_str() {
            "host" | "hostname" if !value.is_empty() => config.hostname = Some(value),
            "sshkey" if !value.is_empty() => config.authorized_keys.push(value),
            _ => {}
        }
    }
    config
}

/// Builds the legacy command line form, quoting the key as the 2016 CLI did.
pub fn render(config: &GuestConfig) -> String {
    let mut parts = Vec::new();
    if let Some(host) = &config.hostname {
        parts.push(format!("host={host}"));
    }
    for key in &config.authorized_keys {
        parts.push(format!("sshkey=\"{key}\""));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb7bnFz0lqCSsT6r6uMTAj9Njhq8zW0Vv1t5uyyEm8n alice in wonderland";

    #[test]
    fn legacy_form_with_spaces_in_the_key() {
        let line =
            format!("earlyprintk=serial console=ttyS0 host=fluffy-kitty sshkey=\"{KEY}\" quiet\n");
        let config = parse(&line);
        assert_eq!(config.hostname.as_deref(), Some("fluffy-kitty"));
        assert_eq!(config.authorized_keys, vec![KEY.to_owned()]);
        config.validate().unwrap();
    }

    #[test]
    fn quotes_around_the_whole_word() {
        let line = format!("quiet \"sshkey={KEY}\" host=a");
        let config = parse(&line);
        assert_eq!(config.authorized_keys, vec![KEY.to_owned()]);
        assert_eq!(config.hostname.as_deref(), Some("a"));
    }

    #[test]
    fn render_then_parse_round_trips() {
        let config = GuestConfig {
            hostname: Some("tabby".into()),
            authorized_keys: vec![
                KEY.into(),
                "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ bob".into(),
            ],
            ..GuestConfig::default()
        };
        assert_eq!(parse(&render(&config)), config);
    }

    #[test]
    fn unrelated_and_empty_words() {
        let config = parse("  ro root=/dev/vda  host= sshkey=\"\" panic=1 ");
        assert_eq!(config, GuestConfig::default());
        assert_eq!(words("a b=c \"d=e f\"").len(), 3);
        assert_eq!(words("unterminated=\"x y").last().unwrap().1, "x y");
    }
}
