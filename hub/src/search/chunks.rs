//! A room's lines cut into chunks for indexing, each keyed by a hash of its text.
//!
//! Boundaries are chosen by content, not by position: a chunk ends after a line whose hash
//! says so (about one line in four) once it holds [`MIN_CHARS`], or before it would pass
//! [`MAX_CHARS`]. An edit therefore changes the chunks around it and leaves the boundaries
//! elsewhere where they were, so only those chunks are embedded again. Each chunk also starts
//! with the last line of the one before ([`OVERLAP_CHARS`] at most), so a passage cut at a
//! boundary is still found whole in one of them. A line longer than [`MAX_CHARS`] is cut at
//! word boundaries.

use sha2::{Digest, Sha256};

use crate::docjson::Line;

/// A chunk is cut once it holds this many characters and a line boundary allows it.
pub(super) const MIN_CHARS: usize = 400;
/// Chunks never hold more (plus the overlap).
pub const MAX_CHARS: usize = 1200;
/// The most of the previous chunk's last line repeated at a chunk's start.
pub(super) const OVERLAP_CHARS: usize = 200;

/// A chunk before indexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Piece {
    /// Hex of the first 16 bytes of the SHA-256 of `text`.
    pub hash: String,
    /// Where its own text (after the overlap) starts in the room's plain text, in characters.
    pub start: usize,
    /// The root it starts in.
    pub field: String,
    /// A relative position of its start.
    pub position: Option<String>,
    /// Each line of `text` (overlap included): where it starts in the plain text, and a
    /// relative position there.
    pub lines: Vec<(usize, Option<String>)>,
    /// Its text, overlap included.
    pub text: String,
}

/// Hex of the first 16 bytes of the SHA-256 of `text`.
pub fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Cuts `lines` into chunks, at most `max_chunks` (the rest is left out); equal chunks of one
/// room are kept once.
pub(super) fn chunk(lines: &[crate::docjson::Line], max_chunks: usize) -> Vec<Piece> {
    let lines = split_long(lines);
    let mut out: Vec<Piece> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0usize; // of the current line in the plain text
    let mut current: Option<(Piece, usize)> = None; // the piece and its length in characters
    // The end of the previous chunk's last line, with that line's start and position.
    let mut previous_last: Option<(String, usize, Option<String>)> = None;
    for line in &lines {
        let len = line.text.chars().count();
        if let Some((piece, n)) = &current
            && *n + 1 + len > MAX_CHARS
        {
            let _ = n;
            let done = piece.clone();
            previous_last = last_line(&done);
            finish(&mut out, &mut seen, done);
            current = None;
        }
        match &mut current {
            Some((piece, n)) => {
                piece.text.push('\n');
                piece.text.push_str(&line.text);
                piece.lines.push((offset, line.position.clone()));
                *n += 1 + len;
            }
            None => {
                let mut text = String::new();
                let mut lines = Vec::new();
                if let Some((prev, at, position)) = previous_last.take() {
                    text.push_str(&prev);
                    text.push('\n');
                    lines.push((at, position));
                }
                text.push_str(&line.text);
                lines.push((offset, line.position.clone()));
                current = Some((
                    Piece {
                        hash: String::new(),
                        start: offset,
                        field: line.field.clone(),
                        position: line.position.clone(),
                        lines,
                        text,
                    },
                    len,
                ));
            }
        }
        offset += len + 1;
        if let Some((piece, n)) = &current
            && *n >= MIN_CHARS
            && cut_after(&line.text)
        {
            let done = piece.clone();
            previous_last = last_line(&done);
            finish(&mut out, &mut seen, done);
            current = None;
        }
        if out.len() >= max_chunks {
            return out;
        }
    }
    if let Some((piece, _)) = current {
        finish(&mut out, &mut seen, piece);
    }
    out.truncate(max_chunks);
    out
}

fn finish(out: &mut Vec<Piece>, seen: &mut std::collections::HashSet<String>, mut piece: Piece) {
    piece.hash = hash(&piece.text);
    if seen.insert(piece.hash.clone()) {
        out.push(piece);
    }
}

/// The content-defined boundary: about one line in four ends a chunk.
fn cut_after(line: &str) -> bool {
    let digest = Sha256::digest(line.as_bytes());
    digest[0] % 4 == 0
}

fn last_line(piece: &Piece) -> Option<(String, usize, Option<String>)> {
    let last = piece.text.rsplit('\n').next()?;
    let n = last.chars().count();
    let (at, position) = piece.lines.last().cloned()?;
    Some((
        last.chars().skip(n.saturating_sub(OVERLAP_CHARS)).collect(),
        at,
        position,
    ))
}

/// Lines longer than [`MAX_CHARS`] cut at spaces (or anywhere, without one); the parts after
/// the first have no position of their own.
fn split_long(lines: &[Line]) -> Vec<Line> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if line.text.chars().count() <= MAX_CHARS {
            out.push(line.clone());
            continue;
        }
        let chars: Vec<char> = line.text.chars().collect();
        let mut from = 0;
        let mut first = true;
        while from < chars.len() {
            let mut to = (from + MAX_CHARS).min(chars.len());
            if to < chars.len()
                && let Some(space) = chars[from..to].iter().rposition(|c| *c == ' ')
                && space > MAX_CHARS / 2
            {
                to = from + space;
            }
            let text: String = chars[from..to].iter().collect();
            out.push(Line {
                text: text.trim().to_owned(),
                field: line.field.clone(),
                position: if first { line.position.clone() } else { None },
            });
            first = false;
            from = to;
        }
    }
    out.retain(|l| !l.text.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[String]) -> Vec<Line> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Line {
                text: t.clone(),
                field: "default".into(),
                position: Some(format!("p{i}")),
            })
            .collect()
    }

    fn paragraph(i: usize) -> String {
        format!("Paragraph {i} talks about topic number {i} with enough words to matter here.")
    }

    #[test]
    fn chunks_cover_the_text_within_bounds_and_start_at_lines() {
        let texts: Vec<String> = (0..200).map(paragraph).collect();
        let pieces = chunk(&lines(&texts), 10_000);
        assert!(pieces.len() > 5);
        for p in &pieces {
            assert_eq!(
                p.lines.len(),
                p.text.split('\n').count(),
                "a place for every line"
            );
            assert!(
                p.text.chars().count() <= MAX_CHARS + OVERLAP_CHARS + 1,
                "{}",
                p.text.len()
            );
            assert_eq!(p.hash, hash(&p.text));
            assert!(p.position.is_some());
        }
        // Every paragraph is in some chunk.
        for t in &texts {
            assert!(pieces.iter().any(|p| p.text.contains(t.as_str())), "{t}");
        }
        // Offsets point at the chunk's own first line.
        let full = texts.join("\n");
        for p in &pieces {
            let own = p.text.lines().last().expect("line");
            let at: String = full.chars().skip(p.start).take(10).collect();
            assert!(p.text.contains(&at), "{at:?} in {own:?}");
        }
    }

    #[test]
    fn an_edit_changes_only_the_chunks_around_it() {
        let texts: Vec<String> = (0..300).map(paragraph).collect();
        let before = chunk(&lines(&texts), 10_000);
        let mut edited = texts.clone();
        edited[150] = "A wholly different paragraph about pricing.".into();
        edited.insert(10, "An inserted line near the top.".into());
        let after = chunk(&lines(&edited), 10_000);
        let old: std::collections::HashSet<&str> = before.iter().map(|p| p.hash.as_str()).collect();
        let changed = after
            .iter()
            .filter(|p| !old.contains(p.hash.as_str()))
            .count();
        assert!(changed <= 6, "{changed} of {} chunks changed", after.len());
    }

    #[test]
    fn long_lines_are_cut_and_duplicates_kept_once() {
        let long = "word ".repeat(1000);
        let texts = vec![long.clone(), "same".into(), "same".into()];
        let pieces = chunk(&lines(&texts), 10_000);
        assert!(
            pieces
                .iter()
                .all(|p| p.text.chars().count() <= MAX_CHARS + OVERLAP_CHARS + 1)
        );
        let hashes: std::collections::HashSet<&str> =
            pieces.iter().map(|p| p.hash.as_str()).collect();
        assert_eq!(hashes.len(), pieces.len());
        assert_eq!(chunk(&lines(&texts), 2).len(), 2);
    }
}
