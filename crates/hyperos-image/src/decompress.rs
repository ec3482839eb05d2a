//! Decompression of the formats Debian uses for package payloads and kernel
//! modules: xz, zstd, gzip.

use std::io::{self, Read};
use std::path::Path;

/// A compression format, told by file name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Format {
    /// The format of `name` (`data.tar.xz`, `foo.ko.zst`, …).
    pub fn of(name: &str) -> Format {
        if name.ends_with(".xz") {
            Format::Xz
        } else if name.ends_with(".zst") {
            Format::Zstd
        } else if name.ends_with(".gz") {
            Format::Gzip
        } else {
            Format::None
        }
    }
}

/// Wraps `input` in a decoder for `format`.
pub fn reader<'a, R: Read + 'a>(format: Format, input: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match format {
        Format::None => Box::new(input),
        Format::Gzip => Box::new(flate2::read::GzDecoder::new(input)),
        Format::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
        ),
        Format::Xz => xz_reader(input)?,
    })
}

#[cfg(target_os = "linux")]
fn xz_reader<'a, R: Read + 'a>(input: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(Box::new(xz2::read::XzDecoder::new(input)))
}

#[cfg(not(target_os = "linux"))]
fn xz_reader<'a, R: Read + 'a>(_input: R) -> io::Result<Box<dyn Read + 'a>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "xz decompression is only built on Linux hosts",
    ))
}

/// Reads a kernel module, decompressing `.ko.xz`, `.ko.zst` and `.ko.gz`.
pub fn read_module(path: &Path) -> io::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    reader(Format::of(&name), io::BufReader::new(file))?.read_to_end(&mut out)?;
    Ok(out)
}
