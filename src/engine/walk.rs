//! Directory traversal in iscc-sum's order, so that `sum DIR` lists files as iscc-sum does
//! and `sum --tree DIR` hashes the same bytes in the same order.
//!
//! In each directory, entries are sorted by the UTF-8 bytes of their NFC-normalised names
//! (then by the raw name); symbolic links are skipped; ignore files (`.*ignore`) come first,
//! then the other files, then each subdirectory in turn. Files ending in `.iscc.json` and
//! paths matched by `.isccignore` files are left out. An `.isccignore` that exists but cannot
//! be read as a file (a directory, or a link to one) stops the walk of its directory with an
//! error, as it stops iscc-sum.
//!
//! Under `--root` ([`walk_beneath`]), every directory is listed and every ignore file read
//! through a descriptor opened beneath its root (see `beneath`): a directory swapped for a link
//! during the walk is refused, and no name or pattern outside the roots is ever read.

use crate::engine::beneath::{Roots, READ_FLAGS};
use crate::engine::ignore::IgnoreSpec;
use crate::error::{ErrorKind, Failure};
use std::ffi::{CStr, OsStr, OsString};
use std::fs::{self, File, FileType};
use std::io::{self, Read};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

/// What a walk found: the files in order, and the directories it could not read.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<PathBuf>,
    pub errors: Vec<(PathBuf, Failure)>,
}

/// Walks `root` (a directory) in iscc-sum's order.
pub fn walk(root: &Path) -> Walk {
    walk_beneath(root, None)
}

/// [`walk`], reading only beneath `roots` when given (`root` canonical, inside one of them).
pub fn walk_beneath(root: &Path, roots: Option<&Roots>) -> Walk {
    let mut out = Walk::default();
    visit(root, "", &IgnoreSpec::default(), roots, &mut out);
    out
}

/// What kind of entry a directory holds, without following a link.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Other,
}

impl Kind {
    fn of(t: FileType) -> Kind {
        if t.is_symlink() {
            Kind::Other
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

/// The entries of `dir` (no `.`/`..`) with their kinds (symbolic links are `Other`), and what
/// could not be read.
fn list(dir: &Path, roots: Option<&Roots>) -> (Vec<(OsString, Kind)>, Vec<Failure>) {
    let Some(roots) = roots else {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return (Vec::new(), vec![Failure::io(&e)]),
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => {
                    if let Ok(t) = e.file_type() {
                        out.push((e.file_name(), Kind::of(t)));
                    }
                }
                Err(e) => errors.push(Failure::io(&e)),
            }
        }
        return (out, errors);
    };
    match roots.open(dir, READ_FLAGS | libc::O_DIRECTORY).map(read_dir_fd) {
        Ok(Ok(entries)) => (entries, Vec::new()),
        Ok(Err(e)) => (Vec::new(), vec![Failure::io(&e)]),
        Err(failure) => (Vec::new(), vec![failure]),
    }
}

/// Lists an open directory (`fdopendir`, `readdir`): entries are judged without following
/// links, from `d_type` or, where the file system does not give it, `fstatat`.
fn read_dir_fd(dir: File) -> io::Result<Vec<(OsString, Kind)>> {
    let fd = dir.into_raw_fd();
    // SAFETY: `fd` is an open directory we own; on success the DIR stream owns it (closedir
    // closes it), on failure we close it.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: still ours: fdopendir failed.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; readdir reports errors only through it.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is a live DIR stream used by this thread only.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) { Ok(()) } else { Err(e) };
        }
        // SAFETY: readdir returned a valid entry whose name is NUL-terminated; it stays valid
        // until the next readdir on the stream, and is copied before then.
        let (name, d_type) = unsafe { (CStr::from_ptr((*entry).d_name.as_ptr()), (*entry).d_type) };
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let kind = match d_type {
            libc::DT_DIR => Kind::Dir,
            libc::DT_REG => Kind::File,
            libc::DT_UNKNOWN => {
                // SAFETY: fstatat on the stream's own descriptor fills the zeroed stat we own.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                let rc = unsafe {
                    libc::fstatat(libc::dirfd(stream), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW)
                };
                match (rc, st.st_mode & libc::S_IFMT) {
                    (0, libc::S_IFDIR) => Kind::Dir,
                    (0, libc::S_IFREG) => Kind::File,
                    _ => Kind::Other,
                }
            }
            _ => Kind::Other,
        };
        out.push((OsStr::from_bytes(name.to_bytes()).to_os_string(), kind));
    };
    // SAFETY: closes the stream (and its descriptor) once; it is not used afterwards.
    unsafe { libc::closedir(stream) };
    result.map(|()| out)
}

/// The patterns of `dir`'s `.isccignore`, as iscc-sum reads it: none when it does not exist
/// (also a dangling link, or a loop of links); an error when it exists but is no file.
fn read_ignore_file(dir: &Path, roots: Option<&Roots>) -> Result<Option<Vec<u8>>, (PathBuf, Failure)> {
    let path = dir.join(".isccignore");
    let at = |f: Failure| (path.clone(), f);
    // iscc-sum asks `Path.exists()`, which follows links and says no on these errors.
    let absent = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP));
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(at(Failure::io(&e))),
    };
    let refuse = |t: FileType| {
        let why = if t.is_dir() {
            Some(io::Error::from_raw_os_error(libc::EISDIR))
        } else if t.is_file() {
            None
        } else if t.is_fifo() || t.is_char_device() || t.is_block_device() || t.is_socket() {
            Some(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"))
        } else {
            None
        };
        match why {
            Some(e) => Err(Failure::new(ErrorKind::NotAFile, crate::streams::plain(&e))),
            None => Ok(()),
        }
    };
    refuse(meta.file_type()).map_err(at)?;
    let Some(roots) = roots else {
        return fs::read(&path).map(Some).map_err(|e| at(Failure::io(&e)));
    };
    // Beneath the roots: a link is followed only where it stays inside them, as for any path.
    let target = match fs::canonicalize(&path) {
        Ok(target) => target,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(at(Failure::io(&e))),
    };
    let mut file = roots.open(&target, READ_FLAGS).map_err(at)?;
    let meta = file.metadata().map_err(|e| at(Failure::io(&e)))?;
    refuse(meta.file_type()).map_err(at)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| at(Failure::io(&e)))?;
    Ok(Some(bytes))
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

fn visit(dir: &Path, rel: &str, inherited: &IgnoreSpec, roots: Option<&Roots>, out: &mut Walk) {
    let mut spec = inherited.clone();
    match read_ignore_file(dir, roots) {
        Ok(None) => {}
        Ok(Some(bytes)) => {
            if let Err(why) = spec.add_file(&bytes) {
                // iscc-sum stops on an ignore file it cannot use: so does this walk's tree.
                out.errors.push((dir.join(".isccignore"), Failure::new(ErrorKind::InvalidInput, why)));
                return;
            }
        }
        Err(error) => {
            out.errors.push(error);
            return;
        }
    }
    let (entries, errors) = list(dir, roots);
    out.errors.extend(errors.into_iter().map(|e| (dir.to_path_buf(), e)));
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for (name, kind) in entries {
        match kind {
            Kind::Dir => dirs.push(name),
            Kind::File => files.push(name),
            Kind::Other => {}
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
            visit(&dir.join(name), &child_rel(name), &spec, roots, out);
        }
    }
}
