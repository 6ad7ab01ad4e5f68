//! Reading a file the user points the program at — the settings and node
//! files, `load FILE` and `--load-config`, agent files, the documents `rag
//! index` takes, a knowledge base's index and chunk files, an Ollama manifest.
//! Every such read goes through [`read`]:
//!
//! - only a regular file, after symbolic links: a FIFO, a device (`/dev/zero`,
//!   a terminal), a directory or a socket is one line naming the path and what
//!   it is, and is never opened for reading. The type is checked before the
//!   open (so a device is not opened at all) and again on the open descriptor
//!   (so a path swapped in between is caught); the open itself is
//!   non-blocking, so even a FIFO swapped in at that moment cannot hang it;
//! - at most [`FileKind::limit`] bytes, checked from the metadata and again while
//!   reading (a file that grows as it is read stops at the limit);
//! - read in pieces against a deadline ([`FileKind::deadline`]): a file system
//!   that delivers too slowly is given up on between pieces. (One `read` call
//!   that never returns — a hung network mount — cannot be interrupted from
//!   the thread that makes it; callers in async code run reads on the blocking
//!   pool, so Ctrl-C still stops waiting for them.)

use std::fs::{FileType, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::FileError;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// What a file is for, which sets how large it may be and how long reading it
/// may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `~/.synapticllamas.json`: a few dozen keys.
    Settings,
    /// A node file (`~/.synapticllamas_nodes.json`, `load FILE`): about 70
    /// bytes an entry, so the limit holds some 450,000 nodes.
    Nodes,
    /// An agent definition (a system prompt and a few fields).
    Agent,
    /// A document for `rag index` (`.txt`, `.md`, `.pdf`).
    Document,
    /// A knowledge base's `document_index.json`: one line per chunk file.
    Index,
    /// One chunk file: a passage and its embedding (a few dozen KiB).
    Chunk,
    /// An Ollama model manifest (a few hundred bytes of JSON).
    Manifest,
    /// The shell's line history (read and written by the line editor).
    History,
}

impl FileKind {
    /// The most bytes a file of this kind may hold.
    pub const fn limit(self) -> u64 {
        match self {
            FileKind::Settings | FileKind::Agent | FileKind::Manifest => 4 * MIB,
            FileKind::Nodes => 32 * MIB,
            FileKind::Chunk | FileKind::History => 16 * MIB,
            FileKind::Document | FileKind::Index => 256 * MIB,
        }
    }

    /// How long reading one file of this kind may take.
    pub const fn deadline(self) -> Duration {
        match self {
            FileKind::Document | FileKind::Index => Duration::from_secs(120),
            _ => Duration::from_secs(20),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            FileKind::Settings => "a settings file",
            FileKind::Nodes => "a node file",
            FileKind::Agent => "an agent file",
            FileKind::Document => "a document",
            FileKind::Index => "a knowledge-base index",
            FileKind::Chunk => "a chunk file",
            FileKind::Manifest => "a model manifest",
            FileKind::History => "a history file",
        }
    }
}

/// Bytes read at a time (the deadline is checked between pieces).
const PIECE: usize = 256 * 1024;

/// The bytes of the regular file at `path`; `Ok(None)` when nothing is there
/// (not even a dangling symbolic link). Every other problem is one error
/// naming the path.
pub fn read(path: &Path, kind: FileKind) -> Result<Option<Vec<u8>>, FileError> {
    let fault = |m: String| FileError::new(path, m);
    // First look without opening: a device or a FIFO is never opened.
    if !check(path, kind)? {
        return Ok(None);
    }
    // Non-blocking, so not even a FIFO put there since the look can hang the
    // open; no controlling terminal from a tty put there either.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fault(format!("cannot read: {e}"))),
    };
    // Then on what was opened, which is what will be read.
    let meta = file
        .metadata()
        .map_err(|e| fault(format!("cannot read: {e}")))?;
    check_meta(path, &meta, kind)?;
    read_limited(file, meta.len(), kind.limit(), kind.deadline())
        .map(Some)
        .map_err(|why| fault(why.message(kind)))
}

/// Whether `path` may be handed to a reader this module does not drive (the
/// line editor's history): `Ok(false)` when nothing is there, `Ok(true)` for a
/// regular file within the limit, else the one-line error [`read`] would give.
/// A look at the metadata only, nothing is opened (so a path swapped for a
/// FIFO at that very moment is not caught: keep this for files such as the
/// history, which only this program writes).
pub fn check(path: &Path, kind: FileKind) -> Result<bool, FileError> {
    match std::fs::metadata(path) {
        Ok(m) => check_meta(path, &m, kind).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::symlink_metadata(path) {
                Ok(_) => Err(FileError::new(
                    path,
                    format!(
                        "is a symbolic link to {}, which does not exist",
                        link_target(path)
                    ),
                )),
                Err(_) => Ok(false),
            }
        }
        Err(e) => Err(FileError::new(path, format!("cannot read: {e}"))),
    }
}

/// Refuse anything but a regular file within the size limit.
fn check_meta(path: &Path, meta: &Metadata, kind: FileKind) -> Result<(), FileError> {
    if !meta.is_file() {
        let what = describe(meta.file_type());
        let message = if is_link(path) {
            format!(
                "is a symbolic link to {}, {what}, not a regular file",
                link_target(path)
            )
        } else {
            format!("is {what}, not a regular file")
        };
        return Err(FileError::new(path, message));
    }
    if meta.len() > kind.limit() {
        return Err(FileError::new(
            path,
            Short::TooLarge(meta.len()).message(kind),
        ));
    }
    Ok(())
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn link_target(path: &Path) -> String {
    std::fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A file type in words ("a named pipe (FIFO)").
pub fn describe(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

/// Why a read stopped short.
#[derive(Debug, PartialEq)]
enum Short {
    /// The file is this many bytes, over the limit.
    TooLarge(u64),
    /// It grew past the limit while it was read.
    Grew,
    /// The deadline passed after this many bytes.
    Slow(u64),
    Io(String),
}

impl Short {
    fn message(&self, kind: FileKind) -> String {
        let limit = size(kind.limit());
        let noun = kind.noun();
        match self {
            Short::TooLarge(n) => format!(
                "is {}, more than {noun} may be ({limit}); not read",
                size(*n)
            ),
            Short::Grew => {
                format!("grew past {limit} while it was read, more than {noun} may be; not read")
            }
            Short::Slow(n) => format!(
                "not read within {} s ({} of it arrived); is the file system stuck?",
                kind.deadline().as_secs(),
                size(*n)
            ),
            Short::Io(e) => format!("cannot read: {e}"),
        }
    }
}

/// Read at most `limit` bytes from `from`, in pieces, until `deadline` has
/// passed; more than `limit` bytes is an error, not a cut.
fn read_limited(
    mut from: impl Read,
    size_hint: u64,
    limit: u64,
    deadline: Duration,
) -> Result<Vec<u8>, Short> {
    let until = Instant::now() + deadline;
    let mut out = Vec::with_capacity(size_hint.min(limit) as usize);
    let mut piece = vec![0u8; PIECE];
    loop {
        let n = match from.read(&mut piece) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Short::Io(e.to_string())),
        };
        if out.len() as u64 + n as u64 > limit {
            return Err(Short::Grew);
        }
        out.extend_from_slice(&piece[..n]);
        if Instant::now() > until {
            return Err(Short::Slow(out.len() as u64));
        }
    }
}

/// `n` bytes in words: "512 bytes", "4.0 KiB", "32.0 MiB".
fn size(n: u64) -> String {
    if n < KIB {
        format!("{n} bytes")
    } else if n < MIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::fs::File;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_regular_file_is_read_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read(&p, FileKind::Settings).unwrap().unwrap(), b"{}");
        assert_eq!(
            read(&dir.path().join("none"), FileKind::Settings).unwrap(),
            None
        );
        // Through a link, too.
        let l = dir.path().join("link.json");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert_eq!(read(&l, FileKind::Settings).unwrap().unwrap(), b"{}");
    }

    #[test]
    fn anything_but_a_regular_file_is_named_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.json");
        mkfifo(&fifo);
        // Nobody writes the FIFO: opening it for reading would block forever.
        let e = read(&fifo, FileKind::Nodes).unwrap_err();
        assert_eq!(e.path, fifo);
        assert!(e.message.contains("a named pipe (FIFO)"), "{e}");
        let e = read(Path::new("/dev/zero"), FileKind::Nodes).unwrap_err();
        assert!(e.message.contains("a character device"), "{e}");
        let e = read(dir.path(), FileKind::Agent).unwrap_err();
        assert!(e.message.contains("a directory"), "{e}");
        let link = dir.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read(&link, FileKind::Settings).unwrap_err();
        assert!(
            e.message
                .contains("a symbolic link to /dev/zero, a character device"),
            "{e}"
        );
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        let e = read(&dangling, FileKind::Settings).unwrap_err();
        assert!(e.message.contains("does not exist"), "{e}");
        let sock = dir.path().join("sock.json");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = read(&sock, FileKind::Settings).unwrap_err();
        assert!(e.message.contains("a socket"), "{e}");
    }

    #[test]
    fn check_looks_without_opening() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("history");
        mkfifo(&fifo);
        assert!(check(&fifo, FileKind::History)
            .unwrap_err()
            .message
            .contains("a named pipe (FIFO)"));
        assert!(!check(&dir.path().join("none"), FileKind::History).unwrap());
        let f = dir.path().join("h");
        std::fs::write(&f, "x\n").unwrap();
        assert!(check(&f, FileKind::History).unwrap());
    }

    #[test]
    fn a_file_over_its_limit_is_refused_from_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        let f = File::create(&p).unwrap();
        f.set_len(FileKind::Agent.limit() + 1).unwrap();
        let e = read(&p, FileKind::Agent).unwrap_err();
        assert!(
            e.message
                .contains("is 4.0 MiB, more than an agent file may be (4.0 MiB)"),
            "{e}"
        );
        // The same size is a fine document.
        assert!(read(&p, FileKind::Document).is_ok());
    }

    /// Bytes without end, as from a file that grows while it is read.
    struct Endless;
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            buf.fill(b'x');
            Ok(buf.len())
        }
    }

    #[test]
    fn a_file_that_grows_stops_at_the_limit() {
        let r = read_limited(Endless, 0, 3 * PIECE as u64, Duration::from_secs(60));
        assert_eq!(r.unwrap_err(), Short::Grew);
        let exact = read_limited(&[7u8; 1000][..], 0, 1000, Duration::from_secs(60));
        assert_eq!(exact.unwrap().len(), 1000);
    }

    /// A reader that takes its time.
    struct Slow(u32);
    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Ok(0);
            }
            self.0 -= 1;
            std::thread::sleep(Duration::from_millis(20));
            buf[0] = b'x';
            Ok(1)
        }
    }

    #[test]
    fn a_slow_file_is_given_up_at_the_deadline() {
        let r = read_limited(Slow(1000), 0, MIB, Duration::from_millis(50));
        assert!(matches!(r, Err(Short::Slow(n)) if n < 1000), "{r:?}");
        assert_eq!(
            read_limited(Slow(2), 0, MIB, Duration::from_secs(60)).unwrap(),
            b"xx"
        );
    }

    #[test]
    fn sizes_read_as_words() {
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(4 * KIB), "4.0 KiB");
        assert_eq!(size(33 * MIB / 2), "16.5 MiB");
    }
}
