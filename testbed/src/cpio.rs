//! A writer of cpio "newc" archives, the format of a Linux initramfs (several archives may be
//! concatenated, each compressed or not; later entries replace earlier ones).

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
};

/// A cpio "newc" archive writer.
#[derive(Debug)]
pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<PathBuf>,
}

impl<W: Write> Cpio<W> {
    /// An empty archive written to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 0,
            dirs: BTreeSet::new(),
        }
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let size = u32::try_from(data.len()).map_err(std::io::Error::other)?;
        let header = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            0,
            0,
            1,
            0,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        pad(&mut self.out, 110 + name.len() + 1)?;
        self.out.write_all(data)?;
        pad(&mut self.out, data.len())
    }

    /// `path`'s parent directories, each once.
    fn parents(&mut self, path: &str) -> std::io::Result<()> {
        let mut missing = Vec::new();
        let mut dir = Path::new(path).parent();
        while let Some(d) = dir {
            if d.as_os_str().is_empty() || d == Path::new("/") || self.dirs.contains(d) {
                break;
            }
            missing.push(d.to_path_buf());
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            self.entry(&d.to_string_lossy(), 0o040_755, (0, 0), &[])?;
            self.dirs.insert(d);
        }
        Ok(())
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, path: &str) -> std::io::Result<()> {
        self.parents(&format!("{path}/x"))
    }

    /// A regular file with permission bits `mode`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o100_000 | mode, (0, 0), data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o120_777, (0, 0), target.as_bytes())
    }

    /// A character device node.
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o020_600, (major, minor), &[])
    }

    /// Writes the trailer; returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        Ok(self.out)
    }
}

fn pad(out: &mut impl Write, len: usize) -> std::io::Result<()> {
    out.write_all(&[0; 3][..(4 - len % 4) % 4])
}
