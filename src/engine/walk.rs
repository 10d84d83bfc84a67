//! Directory traversal in iscc-sum's order, so that `sum DIR` lists files as iscc-sum does
//! and `sum --tree DIR` hashes the same bytes in the same order.
//!
//! In each directory, entries are sorted by the UTF-8 bytes of their NFC-normalised names
//! (then by the raw name); symbolic links are skipped; ignore files (`.*ignore`) come first,
//! then the other files, then each subdirectory in turn. Files ending in `.iscc.json` and
//! paths matched by `.isccignore` files are left out.

use crate::engine::ignore::IgnoreSpec;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

/// What a walk found: the files in order, and the directories it could not read.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<PathBuf>,
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Walks `root` (a directory) in iscc-sum's order.
pub fn walk(root: &Path) -> Walk {
    let mut out = Walk::default();
    visit(root, "", &IgnoreSpec::default(), &mut out);
    out
}

fn sort_key(name: &OsString) -> (Vec<u8>, Vec<u8>) {
    let raw = name.as_bytes().to_vec();
    let normalized = match name.to_str() {
        Some(s) => s.nfc().collect::<String>().into_bytes(),
        None => raw.clone(),
    };
    (normalized, raw)
}

fn is_ignore_file(name: &OsString) -> bool {
    let b = name.as_bytes();
    b.starts_with(b".") && b.ends_with(b"ignore")
}

fn visit(dir: &Path, rel: &str, inherited: &IgnoreSpec, out: &mut Walk) {
    let mut spec = inherited.clone();
    let ignore_file = dir.join(".isccignore");
    if ignore_file.is_file() {
        let added = fs::read(&ignore_file).and_then(|bytes| {
            spec.add_file(&bytes).map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))
        });
        if let Err(e) = added {
            // iscc-sum stops on an ignore file it cannot use: so does this walk's tree.
            out.errors.push((ignore_file, e));
            return;
        }
    }
    let entries = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) => {
            out.errors.push((dir.to_path_buf(), e));
            return;
        }
    };
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.errors.push((dir.to_path_buf(), e));
                continue;
            }
        };
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_symlink() {
            continue;
        }
        let name = entry.file_name();
        if kind.is_dir() {
            dirs.push(name);
        } else if kind.is_file() {
            files.push(name);
        }
    }
    files.sort_by_cached_key(sort_key);
    dirs.sort_by_cached_key(sort_key);
    let child_rel = |name: &OsString| {
        let name = name.to_string_lossy();
        if rel.is_empty() {
            name.into_owned()
        } else {
            format!("{rel}/{name}")
        }
    };
    let keep = |name: &OsString| spec.is_empty() || !spec.is_ignored(&child_rel(name));
    let (ignore_files, plain): (Vec<_>, Vec<_>) = files.into_iter().partition(is_ignore_file);
    for name in ignore_files.iter().chain(plain.iter()) {
        if keep(name) && !name.as_bytes().ends_with(b".iscc.json") {
            out.files.push(dir.join(name));
        }
    }
    for name in &dirs {
        if keep(name) {
            visit(&dir.join(name), &child_rel(name), &spec, out);
        }
    }
}
