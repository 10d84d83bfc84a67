//! Opening a file beneath its root, never through a symbolic link that appeared after the path
//! was checked.
//!
//! Paths are resolved and checked against the roots first (`inputs::Resolver`: symbolic links
//! followed, the result canonical and inside `--root` or an `--allow-root`). Between that check
//! and the open, anyone who can write in a root could swap a file or a directory on the path
//! for a symbolic link to a file outside every root. So the open does not go by name from `/`:
//! it starts at a descriptor of the root the canonical path lies in (opened once per run) and
//! follows no symbolic link at all, as the canonical path has none. Linux 5.6 and later do this
//! in one call (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`);
//! where `openat2` is missing (or refused by a seccomp filter), the path is walked one
//! component at a time with `openat(O_NOFOLLOW)`, which refuses a link in the same places.
//!
//! A link found there means the path changed after it was checked: the file is refused as
//! `outside_root`, whatever the link's target. Where the root's own directory is renamed or
//! replaced during the run, the descriptor still names the directory that was checked.

use crate::error::{ErrorKind, Failure};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `openat2` is known to be unavailable here: every later open walks.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// The directories a run may read beneath, each with a descriptor opened when the run began.
#[derive(Debug)]
pub struct Roots {
    roots: Vec<(PathBuf, OwnedFd)>,
}

/// Flags of every file opened for hashing: read only, and never blocking on a FIFO or taking a
/// terminal (the type is checked after the open; these make the open itself harmless).
pub const READ_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

impl Roots {
    /// Opens each directory (canonical paths: `inputs::Resolver` canonicalises them).
    pub fn new(dirs: &[PathBuf]) -> io::Result<Roots> {
        let mut roots = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let fd = open_at(None, dir, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
            roots.push((dir.clone(), fd));
        }
        Ok(Roots { roots })
    }

    /// The root `path` lies in, the deepest when roots nest, and the path relative to it.
    fn locate<'a>(&self, path: &'a Path) -> Option<(BorrowedFd<'_>, &'a Path)> {
        self.roots
            .iter()
            .filter_map(|(dir, fd)| path.strip_prefix(dir).ok().map(|rel| (dir, fd, rel)))
            .max_by_key(|(dir, _, _)| dir.as_os_str().len())
            .map(|(_, fd, rel)| (fd.as_fd(), rel))
    }

    /// Opens `path` (canonical, inside a root) with `flags`, beneath its root and through no
    /// symbolic link. A path outside every root, or one that now holds a link, is refused as
    /// `outside_root`; other errors are the open's own.
    pub fn open(&self, path: &Path, flags: libc::c_int) -> Result<File, Failure> {
        let Some((root, rel)) = self.locate(path) else {
            return Err(outside("it lies outside every root"));
        };
        // The root itself (a walk of the whole root) is its descriptor's directory, reopened.
        let opened = if rel.as_os_str().is_empty() {
            open_at(Some(root), Path::new("."), flags)
        } else {
            open_beneath(root, rel, flags)
        };
        match opened {
            Ok(fd) => Ok(File::from(fd)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EXDEV)) => Err(outside(
                "a symbolic link appeared in its path after the path was checked (it may lead out of the root)",
            )),
            Err(e) => Err(Failure::io(&e)),
        }
    }
}

fn outside(why: &str) -> Failure {
    Failure::new(ErrorKind::OutsideRoot, format!("refused: {why}"))
}

/// `openat(dir or AT_FDCWD, path, flags)`.
fn open_at(dir: Option<BorrowedFd<'_>>, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let dirfd: RawFd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid NUL-terminated path and a descriptor that `dir` keeps open; the returned
    // descriptor is new and owned by nobody else.
    let fd = unsafe { libc::openat(dirfd, c_path.as_ptr(), flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `rel` beneath `root` following no symbolic link: `openat2` where the kernel has it,
/// else a walk. A link on the path fails with `ELOOP` (or `EXDEV`).
pub fn open_beneath(root: BorrowedFd<'_>, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2_beneath(root, rel, flags) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                // No openat2 (Linux before 5.6), or a seccomp filter that refuses it.
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            result => return result,
        }
    }
    walk_beneath(root, rel, flags)
}

/// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`.
pub fn openat2_beneath(root: BorrowedFd<'_>, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c_path = CString::new(rel.as_os_str().as_bytes())?;
    // SAFETY: open_how is plain data; zeroed is a valid value, then filled in.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the syscall reads the path and the open_how we pass (with its true size) and
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The walk that stands in for `openat2`: every directory of the path opened from the one
/// before with `O_NOFOLLOW`, then the file itself. `rel` must be plain names (canonical): `..`,
/// `.` and absolute paths are refused with `EXDEV`.
pub fn walk_beneath(root: BorrowedFd<'_>, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let names: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::from_raw_os_error(libc::EXDEV)),
        })
        .collect::<io::Result<_>>()?;
    let Some((last, dirs)) = names.split_last() else {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    };
    let mut held: Option<OwnedFd> = None;
    for name in dirs {
        let at = held.as_ref().map_or(root, |fd| fd.as_fd());
        let dir = open_at(
            Some(at),
            Path::new(name),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
        .map_err(|e| link_or(at, name, e))?;
        held = Some(dir);
    }
    let at = held.as_ref().map_or(root, |fd| fd.as_fd());
    open_at(Some(at), Path::new(last), flags | libc::O_NOFOLLOW).map_err(|e| link_or(at, last, e))
}

/// `ELOOP` if `name` in `dir` is a symbolic link (an `O_DIRECTORY | O_NOFOLLOW` open of a link
/// says `ENOTDIR`), else `error`.
fn link_or(dir: BorrowedFd<'_>, name: &std::ffi::OsStr, error: io::Error) -> io::Error {
    if error.raw_os_error() == Some(libc::ELOOP) {
        return error;
    }
    let Ok(c_name) = CString::new(name.as_bytes()) else { return error };
    // SAFETY: fstatat fills the zeroed stat we own; the name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), c_name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return io::Error::from_raw_os_error(libc::ELOOP);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    type Opener = fn(BorrowedFd<'_>, &Path, libc::c_int) -> io::Result<OwnedFd>;

    fn read(fd: OwnedFd) -> String {
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    /// Both ways of opening: plain files open, any link on the path is refused.
    #[test]
    fn links_are_refused_by_openat2_and_by_the_walk() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "inside").unwrap();
        std::fs::write(tmp.path().join("secret"), "outside").unwrap();
        symlink(tmp.path().join("secret"), root.join("a/out")).unwrap();
        symlink("b/f", root.join("a/in")).unwrap();
        symlink(tmp.path(), root.join("updir")).unwrap();
        symlink("a", root.join("alias")).unwrap();
        let roots = Roots::new(std::slice::from_ref(&root)).unwrap();
        let fd = roots.roots[0].1.as_fd();
        let openers: [(&str, Opener); 2] = [("openat2", openat2_beneath), ("walk", walk_beneath)];
        for (name, open) in openers {
            assert_eq!(read(open(fd, Path::new("a/b/f"), READ_FLAGS).unwrap()), "inside", "{name}");
            for bad in ["a/out", "a/in", "updir/secret", "alias/b/f", "../secret", "/etc/passwd"] {
                let e = open(fd, Path::new(bad), READ_FLAGS).expect_err(bad);
                assert!(matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EXDEV)), "{name} {bad}: {e}");
            }
            let e = open(fd, Path::new("a/missing"), READ_FLAGS).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name}");
        }
        // Through `Roots`: by canonical path, refusals named as such.
        assert!(roots.open(&root.join("a/b/f"), READ_FLAGS).is_ok());
        let refused = roots.open(&root.join("a/out"), READ_FLAGS).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::OutsideRoot);
        let elsewhere = roots.open(&tmp.path().join("secret"), READ_FLAGS).unwrap_err();
        assert_eq!(elsewhere.kind, ErrorKind::OutsideRoot);
    }

    /// A file swapped for a link to a file outside the root while it is opened again and
    /// again: every open gives the inside file or a refusal, never the outside file.
    #[test]
    fn a_swap_during_the_opens_never_reaches_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(tmp.path().join("secret"), "outside").unwrap();
        let roots = Roots::new(std::slice::from_ref(&root)).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swapper = {
            let (root, secret, stop) = (root.clone(), tmp.path().join("secret"), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tmp_name = root.join("d/.swap");
                    if n % 2 == 0 {
                        std::fs::write(&tmp_name, "inside").unwrap();
                    } else {
                        symlink(&secret, &tmp_name).unwrap();
                    }
                    std::fs::rename(&tmp_name, root.join("d/f")).unwrap();
                    n += 1;
                }
            })
        };
        let fd = roots.roots[0].1.as_fd();
        let (mut inside, mut refused) = (0, 0);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut i = 0u64;
        while (inside < 200 || refused < 200) && std::time::Instant::now() < until {
            i += 1;
            // Pauses let the swapper run at any point of its cycle.
            std::thread::sleep(std::time::Duration::from_micros(i % 7));
            let open: Opener = if i % 2 == 0 { openat2_beneath } else { walk_beneath };
            match open(fd, Path::new("d/f"), READ_FLAGS) {
                Ok(fd) => {
                    assert_eq!(read(fd), "inside");
                    inside += 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => refused += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(inside > 0 && refused > 0, "the swap raced: {inside} inside, {refused} refused");
    }
}
