//! The files `rag index` takes (`.txt`, `.md`, `.pdf`, and folders of them)
//! and their text. PDF text comes from the `pdf-extract` crate; as in
//! FlockParser, every line of a PDF's text becomes its own paragraph.

use std::path::{Path, PathBuf};
use std::sync::Once;

use crate::config::FileError;

pub(crate) const EXTENSIONS: &[&str] = &["txt", "md", "pdf"];

fn kind(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    EXTENSIONS.contains(&ext.as_str()).then_some(ext)
}

/// `~/x` → the home directory's `x`.
pub(crate) fn expand_home(arg: &str) -> PathBuf {
    match arg.strip_prefix("~/") {
        Some(rest) => dirs::home_dir()
            .map(|h| h.join(rest))
            .unwrap_or_else(|| PathBuf::from(arg)),
        None if arg == "~" => dirs::home_dir().unwrap_or_else(|| PathBuf::from(arg)),
        None => PathBuf::from(arg),
    }
}

/// The files named by `args` (folders searched recursively, hidden entries
/// skipped, in name order), each once; one line per argument that is not usable.
pub fn collect(args: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for a in args {
        match std::fs::metadata(a) {
            Err(e) => problems.push(format!("{}: {e}", a.display())),
            Ok(m) if m.is_dir() => {
                let before = files.len();
                walk(a, &mut files, &mut problems);
                if files.len() == before {
                    problems.push(format!(
                        "{}: no .txt, .md or .pdf files in this folder",
                        a.display()
                    ));
                }
            }
            Ok(_) if kind(a).is_some() => files.push(a.clone()),
            Ok(_) => problems.push(format!(
                "{}: not a .txt, .md or .pdf file; skipped",
                a.display()
            )),
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    (files, problems)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        // Symbolic links to folders are not followed (no loops).
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, files, problems),
            Ok(_) if kind(&p).is_some() && p.is_file() => files.push(p),
            _ => {}
        }
    }
}

/// The text of a file (its bytes already read); an error names the file.
pub(crate) fn text_of(path: &Path, bytes: &[u8]) -> Result<String, FileError> {
    let pdf = kind(path).as_deref() == Some("pdf");
    let text = if pdf {
        pdf_text(path, bytes)?
    } else {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(e) => {
                return Err(FileError::new(
                    path,
                    format!("not UTF-8 text (byte {})", e.valid_up_to() + 1),
                ))
            }
        }
    };
    if text.trim().is_empty() {
        return Err(FileError::new(
            path,
            if pdf {
                "no text could be extracted (a scanned PDF needs OCR first)"
            } else {
                "no text in the file"
            },
        ));
    }
    Ok(text)
}

const PDF_THREAD: &str = "rag-pdf-text";

/// Panics inside the PDF library (it has some on malformed files) become an
/// error for that file, without the panic message on stderr.
fn quiet_pdf_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(PDF_THREAD) {
                previous(info);
            }
        }));
    });
}

fn pdf_text(path: &Path, bytes: &[u8]) -> Result<String, FileError> {
    quiet_pdf_panics();
    let owned = bytes.to_vec();
    let result = std::thread::Builder::new()
        .name(PDF_THREAD.into())
        .spawn(move || pdf_extract::extract_text_from_mem(&owned))
        .map_err(|e| FileError::new(path, format!("cannot start the PDF reader: {e}")))?
        .join();
    let text = match result {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(FileError::new(path, format!("not a readable PDF ({e})"))),
        Err(_) => {
            return Err(FileError::new(
                path,
                "the PDF reader failed on this file (malformed or unsupported PDF)",
            ))
        }
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_searched_and_other_files_named() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for f in ["b.md", "a.TXT", ".hidden.txt", "x.docx", "sub/c.pdf"] {
            std::fs::write(d.path().join(f), "text").unwrap();
        }
        let (files, problems) = collect(&[
            d.path().to_path_buf(),
            d.path().join("x.docx"),
            d.path().join("nope.txt"),
            d.path().join("b.md"),
        ]);
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(d.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.TXT", "b.md", "sub/c.pdf"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("x.docx: not a .txt, .md or .pdf file"));
        assert!(problems[1].contains("nope.txt"));
    }

    #[test]
    fn bad_text_and_bad_pdfs_are_errors_naming_the_file() {
        let p = Path::new("/d/notes.txt");
        assert_eq!(text_of(p, b"\xEF\xBB\xBFhello").unwrap(), "hello");
        assert!(text_of(p, b"ab\xFFcd")
            .unwrap_err()
            .to_string()
            .contains("notes.txt: not UTF-8 text (byte 3)"));
        assert!(text_of(p, b"  \n")
            .unwrap_err()
            .to_string()
            .contains("no text in the file"));
        let e = text_of(Path::new("/d/paper.pdf"), b"%PDF-1.4 garbage")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/d/paper.pdf: "), "{e}");
    }
}
