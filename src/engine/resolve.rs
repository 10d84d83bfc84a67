//! Paths as the user named them, resolved and confined to the roots: with `--root`, a
//! relative path is taken from the root, and a path that resolves (through `..` or symbolic
//! links) outside the root and every `--allow-root` is refused. The roots are opened once,
//! here; files are then opened beneath them (`beneath`).

use crate::engine::beneath::Roots;
use crate::engine::failure::{Failure, FailureKind};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Resolves user paths, confining them to a root when one is given.
#[derive(Debug, Clone)]
pub struct Resolver {
    root: Option<PathBuf>,
    /// Where symbolic links in the root may also lead (canonical).
    allowed: Vec<PathBuf>,
    /// The root and the allowed roots, opened: what files are opened beneath.
    roots: Option<Arc<Roots>>,
}

/// A directory, canonicalised.
fn canonical_dir(dir: &Path) -> io::Result<PathBuf> {
    let canonical = std::fs::canonicalize(dir)?;
    if !canonical.is_dir() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a directory"));
    }
    Ok(canonical)
}

impl Resolver {
    /// `root` must exist and be a directory; it is canonicalised and opened once.
    pub fn new(root: Option<&Path>) -> io::Result<Resolver> {
        let mut resolver =
            Resolver { root: root.map(canonical_dir).transpose()?, allowed: Vec::new(), roots: None };
        resolver.open_roots()?;
        Ok(resolver)
    }

    /// Also lets links in the root lead into `dir` (an allowed root). An allowed root that
    /// does not exist here is an error: the admin named it for a reason.
    pub fn allow(mut self, dir: &Path) -> io::Result<Resolver> {
        self.allowed.push(canonical_dir(dir)?);
        self.open_roots()?;
        Ok(self)
    }

    fn open_roots(&mut self) -> io::Result<()> {
        if let Some(root) = &self.root {
            let all: Vec<PathBuf> = std::iter::once(root).chain(&self.allowed).cloned().collect();
            self.roots = Some(Arc::new(Roots::new(&all)?));
        }
        Ok(())
    }

    /// The opened roots (with `--root`): every file is opened beneath one of them.
    pub fn roots(&self) -> Option<&Arc<Roots>> {
        self.roots.as_ref()
    }

    /// Where `path` points. Under a root: relative paths are taken from the root, `..` that
    /// climbs out and symbolic links that lead out are refused.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, Failure> {
        let Some(root) = &self.root else {
            return Ok(path.to_path_buf());
        };
        let joined = root.join(path);
        let lexical = normalize(&joined);
        let outside = || {
            Failure::new(FailureKind::OutsideRoot, format!("resolves outside the root {}", root.display()))
        };
        if !lexical.starts_with(root) {
            return Err(outside());
        }
        let canonical = std::fs::canonicalize(&joined).map_err(|e| Failure::io(&e))?;
        if !canonical.starts_with(root) && !self.allowed.iter().any(|a| canonical.starts_with(a)) {
            return Err(outside());
        }
        Ok(canonical)
    }
}

/// Removes `.` and resolves `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
