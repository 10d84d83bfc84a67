//! From command-line arguments to jobs: paths resolved (under `--root` when given),
//! directories walked, file lists and group lines read.

use crate::engine::beneath::Roots;
use crate::engine::walk;
use crate::error::{ErrorKind, Failure};
use crate::pathcodec::PathText;
use serde::{Deserialize, Deserializer};
use std::ffi::OsStr;
use std::io::{self, BufRead};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// One unit of work; each gives exactly one record.
#[derive(Debug)]
pub enum Job {
    /// A file, as the user named it, and where it resolved.
    File {
        display: Vec<u8>,
        path: Result<PathBuf, Failure>,
    },
    Stdin,
    /// A directory hashed as one stream of its files.
    Tree {
        display: Vec<u8>,
        files: Result<Vec<PathBuf>, Failure>,
    },
    Group {
        id: String,
        files: Vec<GroupFile>,
    },
    BadLine {
        line: usize,
        failure: Failure,
    },
}

/// One file of a group: as the line named it, where it resolved, and the size the line said
/// it has (what OMERO recorded), if it said one.
#[derive(Debug)]
pub struct GroupFile {
    pub display: Vec<u8>,
    pub path: Result<PathBuf, Failure>,
    pub size: Option<u64>,
}

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
        let outside =
            || Failure::new(ErrorKind::OutsideRoot, format!("resolves outside the root {}", root.display()));
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

fn display_join(base: &[u8], rel: &Path) -> Vec<u8> {
    let mut d = base.to_vec();
    while d.len() > 1 && d.ends_with(b"/") {
        d.pop();
    }
    d.push(b'/');
    d.extend_from_slice(rel.as_os_str().as_bytes());
    d
}

/// Where a path came from: the command line (where `-` is standard input and directories are
/// walked) or a file list (where every line names a file, `-` a file called `-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    List,
}

/// The files of a directory hashed as one tree, in walk order: the one rule for `sum --tree`
/// and `check`. A directory it cannot read, an unusable `.isccignore`, or no file at all is
/// the tree's failure.
pub fn tree_files(dir: &Path, resolver: &Resolver) -> Result<Vec<PathBuf>, Failure> {
    let walked = walk::walk_beneath(dir, resolver.roots().map(|r| &**r));
    match walked.errors.into_iter().next() {
        Some((p, failure)) => Err(failure.at(&p)),
        None if walked.files.is_empty() => Err(Failure::new(ErrorKind::InvalidInput, "no files found")),
        None => Ok(walked.files),
    }
}

/// Jobs for paths given on the command line or in a file list.
///
/// Directories are walked when given on the command line; in file lists, where a file is
/// expected, a directory is a `not_a_file` record (unless `tree`).
pub fn path_jobs(paths: &[Vec<u8>], tree: bool, origin: Origin, resolver: &Resolver) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(paths.len());
    for given in paths {
        if given.as_slice() == b"-" && origin == Origin::CommandLine {
            jobs.push(Job::Stdin);
            continue;
        }
        let display = given.clone();
        if given.is_empty() {
            let failure = Failure::new(ErrorKind::InvalidInput, "an empty path names no file");
            jobs.push(if tree {
                Job::Tree { display, files: Err(failure) }
            } else {
                Job::File { display, path: Err(failure) }
            });
            continue;
        }
        let resolved = resolver.resolve(Path::new(OsStr::from_bytes(given)));
        let is_dir = resolved.as_ref().is_ok_and(|p| p.is_dir());
        match resolved {
            Ok(dir) if is_dir && tree => {
                // One trailing slash marks a tree, as iscc-sum writes it (`dir//` is `dir/`).
                let mut display = display;
                while display.ends_with(b"/") {
                    display.pop();
                }
                display.push(b'/');
                jobs.push(Job::Tree { display, files: tree_files(&dir, resolver) });
            }
            Ok(dir) if is_dir && origin == Origin::CommandLine => {
                let walked = walk::walk_beneath(&dir, resolver.roots().map(|r| &**r));
                for file in walked.files {
                    let rel = file.strip_prefix(&dir).unwrap_or(&file).to_path_buf();
                    jobs.push(Job::File { display: display_join(&display, &rel), path: Ok(file) });
                }
                for (p, failure) in walked.errors {
                    let rel = p.strip_prefix(&dir).unwrap_or(&p).to_path_buf();
                    jobs.push(Job::File { display: display_join(&display, &rel), path: Err(failure) });
                }
            }
            Ok(file) if tree => jobs.push(Job::Tree {
                display,
                files: Err(Failure::new(
                    ErrorKind::NotAFile,
                    format!("--tree needs a directory: {}", file.display()),
                )),
            }),
            path => jobs.push(Job::File { display, path }),
        }
    }
    jobs
}

/// Reads a path list: one path per line, or NUL-separated; empty entries are skipped.
pub fn read_path_list(reader: &mut dyn BufRead, nul: bool) -> io::Result<Vec<Vec<u8>>> {
    let sep = if nul { b'\0' } else { b'\n' };
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(sep, &mut buf)? == 0 {
            return Ok(out);
        }
        if buf.last() == Some(&sep) {
            buf.pop();
        }
        if !nul && buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if !buf.is_empty() {
            out.push(buf.clone());
        }
    }
}

/// A `--groups` line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupLine {
    id: String,
    files: Vec<ListedFile>,
}

/// A file of a group line: `"path"`, or `{"path": "path", "size": N}` with the size OMERO
/// recorded (`size` may be `null`). Paths that are not UTF-8 are written with `\udcXY` escapes
/// (see `pathcodec`).
struct ListedFile {
    path: Vec<u8>,
    size: Option<u64>,
}

impl<'de> Deserialize<'de> for ListedFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct WithSize {
            path: PathText,
            #[serde(default)]
            size: Option<u64>,
        }
        // Read from the JSON text itself (not `#[serde(untagged)]`, which would read the path
        // as UTF-8 text and refuse its escapes).
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        if raw.get().starts_with('"') {
            let path: PathText = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
            return Ok(ListedFile { path: path.0, size: None });
        }
        let entry: WithSize = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
        Ok(ListedFile { path: entry.path.0, size: entry.size })
    }
}

/// Reads `--groups` JSON Lines; a line that does not parse becomes a `BadLine` job.
pub fn group_jobs(reader: &mut dyn BufRead, resolver: &Resolver) -> io::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(jobs);
        }
        number += 1;
        let parsed = match std::str::from_utf8(&buf) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => serde_json::from_str::<GroupLine>(text).map_err(|e| e.to_string()),
            Err(_) => {
                Err("the line is not UTF-8 text (names that are not UTF-8 are written with \\udcXY escapes)"
                    .to_string())
            }
        };
        let parsed = parsed.and_then(|g| {
            if g.files.is_empty() {
                Err("a group needs at least one file".to_string())
            } else {
                Ok(g)
            }
        });
        match parsed {
            Ok(group) => {
                let files = group
                    .files
                    .into_iter()
                    .map(|ListedFile { path, size }| {
                        let resolved = if path.is_empty() {
                            Err(Failure::new(ErrorKind::InvalidInput, "an empty path names no file"))
                        } else {
                            resolver.resolve(Path::new(OsStr::from_bytes(&path)))
                        };
                        GroupFile { display: path, path: resolved, size }
                    })
                    .collect();
                jobs.push(Job::Group { id: group.id, files });
            }
            Err(message) => jobs.push(Job::BadLine {
                line: number,
                failure: Failure::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "malformed group line (expected {{\"id\": \"..\", \"files\": [\"..\" or \
                         {{\"path\": \"..\", \"size\": N}}, ..]}}): {message}"
                    ),
                ),
            }),
        }
    }
}
