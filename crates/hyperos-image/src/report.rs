//! What a build produced and where its bytes go.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputFile {
    pub path: PathBuf,
    pub size: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

/// A part of the image in the size table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartSize {
    /// `kernel`, `modules`, `busybox`, `dropbear+ssh`, …, `PID 1`, `other`.
    pub name: String,
    /// Files, links and directories (1 for the kernel).
    pub entries: usize,
    /// Bytes before compression (for the initrd: bytes of its cpio archive).
    pub uncompressed: u64,
    /// Estimated bytes in the output. Exact for the kernel; for initrd parts,
    /// the real initrd.gz size shared out in proportion to how well each part
    /// compresses on its own.
    pub compressed: u64,
}

/// A package the image took files from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
}

/// Where the kernel came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelSource {
    Package(PackageVersion),
    File(PathBuf),
}

/// The result of [`crate::build`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildReport {
    /// `out_dir/kernel`.
    pub kernel: OutputFile,
    /// `out_dir/initrd.gz`.
    pub initrd: OutputFile,
    /// `out_dir/manifest.json`.
    pub manifest: PathBuf,
    pub kernel_source: KernelSource,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_release: String,
    /// Size of the initrd's cpio archive before gzip.
    pub initrd_uncompressed: u64,
    /// Entries in the initrd.
    pub initrd_entries: usize,
    /// Kernel first, then the initrd's parts.
    pub parts: Vec<PartSize>,
    /// Packages that contributed files to the initrd, by name.
    pub packages: Vec<PackageVersion>,
    /// Absolute paths of the shipped modules, in load order.
    pub modules: Vec<String>,
    /// Wanted modules that are built into the kernel.
    pub builtin_modules: Vec<String>,
}

impl BuildReport {
    /// Kernel plus initrd, as the VM loads them.
    pub fn total(&self) -> u64 {
        self.kernel.size + self.initrd.size
    }
}

/// `12.3 MB`, `456.7 kB`, `12 B`, decimal units.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HyperOS image, kernel {}", self.kernel_release)?;
        writeln!(
            f,
            "  {}  {}",
            self.kernel.path.display(),
            human(self.kernel.size)
        )?;
        writeln!(
            f,
            "  {}  {} ({} uncompressed, {} entries)",
            self.initrd.path.display(),
            human(self.initrd.size),
            human(self.initrd_uncompressed),
            self.initrd_entries
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<16} {:>8} {:>14} {:>14} {:>6}",
            "part", "entries", "uncompressed", "in output", "share"
        )?;
        let total = self.total().max(1);
        for part in &self.parts {
            writeln!(
                f,
                "{:<16} {:>8} {:>14} {:>14} {:>5.1}%",
                part.name,
                part.entries,
                human(part.uncompressed),
                format!("~{}", human(part.compressed)),
                part.compressed as f64 * 100.0 / total as f64
            )?;
        }
        let uncompressed: u64 = self.parts.iter().map(|p| p.uncompressed).sum();
        let entries: usize = self.parts.iter().map(|p| p.entries).sum();
        writeln!(
            f,
            "{:<16} {:>8} {:>14} {:>14} {:>5.1}%",
            "total",
            entries,
            human(uncompressed),
            human(self.total()),
            100.0
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{} modules, {} packages:",
            self.modules.len(),
            self.packages.len()
        )?;
        let names: Vec<String> = self
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        writeln!(f, "  {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_part_and_the_total() {
        let file = |name: &str, size| OutputFile {
            path: PathBuf::from(name),
            size,
            sha256: String::new(),
        };
        let part = |name: &str, uncompressed, compressed| PartSize {
            name: name.to_owned(),
            entries: 1,
            uncompressed,
            compressed,
        };
        let report = BuildReport {
            kernel: file("out/kernel", 14_000_000),
            initrd: file("out/initrd.gz", 6_000_000),
            manifest: PathBuf::from("out/manifest.json"),
            kernel_source: KernelSource::File(PathBuf::from("bzImage")),
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            initrd_uncompressed: 15_000_000,
            initrd_entries: 2,
            parts: vec![
                part("kernel", 14_000_000, 14_000_000),
                part("busybox", 2_000_000, 1_000_000),
            ],
            packages: vec![PackageVersion {
                name: "busybox-static".into(),
                version: "1:1.35".into(),
            }],
            modules: vec![],
            builtin_modules: vec![],
        };
        let text = report.to_string();
        assert!(text.contains("busybox"), "{text}");
        assert!(text.contains("20.0 MB"), "{text}");
        assert!(text.contains("70.0%"), "{text}");
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1_500), "1.5 kB");
    }
}
