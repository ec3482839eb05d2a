//! A minimal client of QEMU's machine protocol (QMP), enough to ask for an
//! ACPI power-off and to check that QEMU answers.

use std::path::Path;

use crate::VmError;

/// Sends one QMP command (after the capabilities handshake) and waits for
/// its answer. Events that arrive meanwhile are skipped.
#[cfg(unix)]
pub fn execute(socket: &Path, command: &str) -> Result<serde_json::Value, VmError> {
    use std::io::{BufRead, BufReader, Write};
    use std::time::Duration;

    let fail = |why: String| VmError::Qmp {
        path: socket.to_owned(),
        why,
    };
    let stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|e| fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail(e.to_string()))?;
    let mut writer = stream.try_clone().map_err(|e| fail(e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let read_reply = |reader: &mut BufReader<std::os::unix::net::UnixStream>| -> Result<serde_json::Value, VmError> {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(|e| fail(e.to_string()))? == 0 {
                return Err(fail("the connection closed".into()));
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| fail(format!("bad reply: {e}")))?;
            if let Some(ret) = value.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = value.get("error") {
                return Err(fail(err.to_string()));
            }
            // A greeting or an event: keep reading.
        }
    };
    let mut greeting = String::new();
    reader
        .read_line(&mut greeting)
        .map_err(|e| fail(e.to_string()))?;
    for cmd in ["qmp_capabilities", command] {
        writeln!(writer, "{{\"execute\":\"{cmd}\"}}").map_err(|e| fail(e.to_string()))?;
        let reply = read_reply(&mut reader)?;
        if cmd == command {
            return Ok(reply);
        }
    }
    Err(fail("no reply".into()))
}

#[cfg(not(unix))]
pub fn execute(socket: &Path, _command: &str) -> Result<serde_json::Value, VmError> {
    Err(VmError::Qmp {
        path: socket.to_owned(),
        why: "QMP over a named pipe is not implemented on this platform yet".into(),
    })
}
