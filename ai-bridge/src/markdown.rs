//! Markdown read as it streams: the answer arrives a few characters at a time, and every
//! member watches it, so this turns each piece into what can already be shown, in the
//! editor's own structure, without ever taking back what it emitted.
//!
//! - A block's kind is decided by its line prefix (`# `, `- `, `1. `, `> `, a fence, a rule),
//!   which arrives first: the prefix is held back until it is decided, then the block opens and
//!   its text streams into it.
//! - Inline marks (`**bold**`, `*italic*`, `` `code` ``, `[text](url)`) stream their text
//!   plainly from an anchor; when the closing delimiter arrives, the range is formatted. The
//!   delimiters never show. A delimiter that never closes is put back, as literal text, at its
//!   anchor.
//! - Links are kept only for `http`, `https` and `mailto` targets (model output is untrusted).
//!
//! The parser does no I/O and knows nothing of yrs: a writer turns its [`Event`]s into
//! transactions.

/// A block of the answer, named after the Tiptap StarterKit node it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// `paragraph`.
    Paragraph,
    /// `heading` with `level` 1-6.
    Heading(u8),
    /// A `listItem` of a `bulletList`.
    BulletItem,
    /// A `listItem` of an `orderedList` starting at the number given.
    OrderedItem(u64),
    /// `codeBlock` with its `language`.
    CodeBlock(Option<String>),
    /// A `paragraph` inside a `blockquote`.
    Quote,
    /// `horizontalRule` (no text).
    Rule,
}

/// An inline mark, named after the Tiptap StarterKit mark it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// `bold`.
    Bold,
    /// `italic`.
    Italic,
    /// `code`.
    Code,
    /// `link` with its `href` (http, https or mailto only).
    Link(String),
}

/// What the writer does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A block opens; the text that follows goes into it.
    Open(Block),
    /// Text appended to the open block.
    Text(String),
    /// A mark may start here: remember the position (an anchor, not an index: people may be
    /// typing elsewhere in the block).
    Anchor(u32),
    /// The mark that started at the anchor closes at the current end: format the range.
    Format(u32, Mark),
    /// The mark never closed: insert `literal` at the anchor (may be empty: nothing to put
    /// back, forget the anchor).
    Unanchor(u32, String),
    /// The open block ends.
    Close,
}

/// Longest line prefix held back while a block's kind is undecided.
const MAX_PREFIX: usize = 16;
/// Longest link target; a longer one is dropped (its text stays).
const MAX_URL: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delim {
    Bold(char),
    Italic(char),
    Code,
    LinkText,
}

impl Delim {
    fn literal(self) -> String {
        match self {
            Delim::Bold(c) => format!("{c}{c}"),
            Delim::Italic(c) => c.to_string(),
            Delim::Code => "`".into(),
            Delim::LinkText => "[".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Inline {
    /// Plain text.
    Text,
    /// A `*` or `_` seen; the next character says whether it is one or two.
    Star(char),
    /// A `\`: the next character is literal.
    Escape,
    /// `]` of an open link text seen; a `(` must follow.
    LinkClose,
    /// Collecting a link target after `](`.
    Url(String),
}

/// The streaming parser. Feed it pieces with [`Markdown::push`], then [`Markdown::finish`].
#[derive(Debug)]
pub struct Markdown {
    /// Characters of the current line not yet decided (its prefix).
    line_start: Option<String>,
    /// The open block, if any.
    open: Option<Block>,
    /// Inside a fenced code block: its text is literal.
    in_code_block: bool,
    /// A fence line being read (`Some` once "```" opened the line).
    fence: Option<String>,
    /// The current line held back as a possible closing fence.
    fence_close: Option<String>,
    /// The line had text (a blank line closes a paragraph).
    line_has_text: bool,
    /// Inside a code block: a line ended; its newline is written only if another line of
    /// code follows (not before the closing fence).
    code_newline: bool,
    inline: Inline,
    marks: Vec<(u32, Delim)>,
    next_anchor: u32,
    out: Vec<Event>,
    text: String,
    /// The previous inline character (for intraword `_`).
    prev: char,
}

impl Default for Markdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Markdown {
    /// A parser at the start of an answer.
    pub fn new() -> Self {
        Markdown {
            line_start: Some(String::new()),
            open: None,
            in_code_block: false,
            fence: None,
            fence_close: None,
            line_has_text: false,
            code_newline: false,
            inline: Inline::Text,
            marks: Vec::new(),
            next_anchor: 0,
            out: Vec::new(),
            text: String::new(),
            prev: ' ',
        }
    }

    /// Reads a piece of the answer and returns what can be written now.
    pub fn push(&mut self, piece: &str) -> Vec<Event> {
        for c in piece.chars() {
            self.char(c);
        }
        self.flush_text();
        std::mem::take(&mut self.out)
    }

    /// The answer ended: puts back unclosed delimiters, closes the open block.
    pub fn finish(&mut self) -> Vec<Event> {
        if let Some(fence) = self.fence_close.take() {
            // A closing fence without its newline still closes.
            if fence.trim() != "```" {
                self.code_line_text(&fence);
            }
        }
        self.code_newline = false;
        if self.fence.is_some() {
            self.char('\n');
        } else if let Some(start) = self.line_start.take()
            && !start.is_empty()
        {
            self.decide(&start, true);
        }
        self.end_line();
        self.close_block();
        self.flush_text();
        std::mem::take(&mut self.out)
    }

    fn char(&mut self, c: char) {
        if let Some(fence) = &mut self.fence {
            // The rest of an opening fence line is its language.
            if c == '\n' {
                let lang = fence.trim().to_owned();
                self.fence = None;
                self.close_block();
                self.open_block(Block::CodeBlock((!lang.is_empty()).then_some(lang)));
                self.in_code_block = true;
                self.line_start = Some(String::new());
            } else if fence.len() < MAX_PREFIX * 4 {
                fence.push(c);
            }
            return;
        }
        if self.in_code_block {
            self.code_char(c);
            return;
        }
        if let Some(mut start) = self.line_start.take() {
            if c == '\n' {
                if start.trim().is_empty() {
                    // A blank line ends the paragraph or list.
                    self.close_block();
                    self.line_start = Some(String::new());
                    return;
                }
                self.decide(&start, true);
                self.end_line();
                self.line_start = Some(String::new());
                return;
            }
            start.push(c);
            match classify(&start, false) {
                Some(decision) => self.apply(&start, decision),
                None if start.len() >= MAX_PREFIX => self.apply(&start, (Block::Paragraph, 0)),
                None => self.line_start = Some(start),
            }
            return;
        }
        if c == '\n' {
            self.end_line();
            self.line_start = Some(String::new());
            return;
        }
        self.inline_char(c);
    }

    /// A code block's character: literal, but a line of "```" closes it.
    fn code_char(&mut self, c: char) {
        if let Some(mut held) = self.fence_close.take() {
            if c == '\n' {
                if held.trim() == "```" {
                    self.in_code_block = false;
                    self.code_newline = false;
                    self.close_block();
                    self.line_start = Some(String::new());
                } else {
                    self.code_line_text(&held);
                    self.code_newline = true;
                    self.line_start = Some(String::new());
                }
                return;
            }
            held.push(c);
            if "```".starts_with(held.trim_start()) {
                self.fence_close = Some(held);
            } else {
                self.code_line_text(&held);
            }
            return;
        }
        if self.line_start.take().is_some() && (c == '`' || c == ' ') {
            // A line starting with a backtick or a space may be the closing fence.
            self.fence_close = Some(c.to_string());
            return;
        }
        if c == '\n' {
            if self.code_newline {
                // An empty line inside the code.
                self.text.push('\n');
            }
            self.code_newline = true;
            self.line_start = Some(String::new());
            return;
        }
        self.code_line_text(&c.to_string());
    }

    /// Text of a code line: the previous line's newline goes first.
    fn code_line_text(&mut self, s: &str) {
        if std::mem::take(&mut self.code_newline) {
            self.text.push('\n');
        }
        self.text.push_str(s);
    }

    fn decide(&mut self, start: &str, line_complete: bool) {
        let decision = classify(start, line_complete).unwrap_or((Block::Paragraph, 0));
        self.apply(start, decision);
    }

    fn apply(&mut self, start: &str, (block, consumed): (Block, usize)) {
        if block == Block::CodeBlock(None) {
            // "```" opened the line: the rest of it is the language.
            self.close_block();
            self.fence = Some(start[consumed..].to_owned());
            return;
        }
        let continues = block == Block::Paragraph && self.open == Some(Block::Paragraph);
        if continues {
            // Lines of one paragraph join with a space, as markdown renders them.
            self.text.push(' ');
            self.prev = ' ';
        } else {
            self.close_block();
            self.open_block(block.clone());
        }
        if block == Block::Rule {
            self.close_block();
            return;
        }
        self.line_has_text = true;
        for c in start[consumed..].chars() {
            self.inline_char(c);
        }
    }

    fn end_line(&mut self) {
        self.resolve_pending();
        match self.open {
            // These blocks are one line each.
            Some(Block::Heading(_))
            | Some(Block::BulletItem)
            | Some(Block::OrderedItem(_))
            | Some(Block::Quote) => self.close_block(),
            _ => {}
        }
        self.line_has_text = false;
    }

    fn open_block(&mut self, block: Block) {
        self.flush_text();
        self.out.push(Event::Open(block.clone()));
        self.open = Some(block);
        self.prev = ' ';
    }

    fn close_block(&mut self) {
        if self.open.is_none() {
            return;
        }
        self.resolve_pending();
        self.flush_text();
        // Unclosed delimiters go back as the literal text they were.
        while let Some((id, delim)) = self.marks.pop() {
            self.out.push(Event::Unanchor(id, delim.literal()));
        }
        self.in_code_block = false;
        self.out.push(Event::Close);
        self.open = None;
    }

    /// Resolves held inline state at a line end.
    fn resolve_pending(&mut self) {
        match std::mem::replace(&mut self.inline, Inline::Text) {
            Inline::Text => {}
            Inline::Star(c) => self.single(c, ' '),
            Inline::Escape => self.text.push('\\'),
            Inline::LinkClose => {
                self.drop_link();
                self.text.push(']');
            }
            Inline::Url(url) => {
                self.drop_link();
                self.text.push_str("](");
                self.text.push_str(&url);
            }
        }
    }

    fn inline_char(&mut self, c: char) {
        match std::mem::replace(&mut self.inline, Inline::Text) {
            Inline::Escape => {
                if !c.is_ascii_punctuation() {
                    self.text.push('\\');
                }
                self.text.push(c);
                self.prev = c;
                return;
            }
            Inline::Star(d) => {
                if c == d {
                    self.toggle(Delim::Bold(d));
                    return;
                }
                self.single(d, c);
            }
            Inline::LinkClose => {
                if c == '(' {
                    self.inline = Inline::Url(String::new());
                    return;
                }
                self.drop_link();
                self.text.push(']');
            }
            Inline::Url(mut url) => {
                if c == ')' {
                    self.end_link(url);
                    return;
                }
                if c.is_whitespace() || url.len() >= MAX_URL {
                    // Not a link after all: its text stays, the target shows as written.
                    self.drop_link();
                    self.text.push_str("](");
                    self.text.push_str(&url);
                } else {
                    url.push(c);
                    self.inline = Inline::Url(url);
                    return;
                }
            }
            Inline::Text => {}
        }
        let in_code = self.marks.iter().any(|(_, d)| *d == Delim::Code);
        match c {
            '`' => self.toggle(Delim::Code),
            _ if in_code => self.text.push(c),
            '\\' => self.inline = Inline::Escape,
            '*' | '_' => {
                // `prev` stays the character before the run of delimiters.
                self.inline = Inline::Star(c);
                return;
            }
            '[' => self.open_mark(Delim::LinkText),
            ']' if self.marks.iter().any(|(_, d)| *d == Delim::LinkText) => {
                self.inline = Inline::LinkClose;
            }
            _ => self.text.push(c),
        }
        self.prev = c;
    }

    /// One `*` or `_`, followed by `next`.
    fn single(&mut self, d: char, next: char) {
        let open = self.marks.iter().any(|(_, m)| *m == Delim::Italic(d));
        if open {
            self.toggle(Delim::Italic(d));
        } else if next.is_whitespace() || (d == '_' && self.prev.is_alphanumeric()) {
            // `a * b`, `snake_case`: literal.
            self.text.push(d);
        } else {
            self.open_mark(Delim::Italic(d));
        }
        self.prev = d;
    }

    fn toggle(&mut self, delim: Delim) {
        if let Some(i) = self.marks.iter().rposition(|(_, d)| *d == delim) {
            let (id, _) = self.marks.remove(i);
            self.flush_text();
            let mark = match delim {
                Delim::Bold(_) => Mark::Bold,
                Delim::Italic(_) => Mark::Italic,
                Delim::Code | Delim::LinkText => Mark::Code,
            };
            self.out.push(Event::Format(id, mark));
        } else {
            self.open_mark(delim);
        }
    }

    fn open_mark(&mut self, delim: Delim) {
        self.flush_text();
        let id = self.next_anchor;
        self.next_anchor = self.next_anchor.wrapping_add(1);
        self.out.push(Event::Anchor(id));
        self.marks.push((id, delim));
    }

    fn drop_link(&mut self) {
        if let Some(i) = self.marks.iter().rposition(|(_, d)| *d == Delim::LinkText) {
            let (id, _) = self.marks.remove(i);
            self.flush_text();
            self.out.push(Event::Unanchor(id, "[".into()));
        }
    }

    fn end_link(&mut self, url: String) {
        let Some(i) = self.marks.iter().rposition(|(_, d)| *d == Delim::LinkText) else {
            return;
        };
        let (id, _) = self.marks.remove(i);
        self.flush_text();
        if safe_link(&url) {
            self.out.push(Event::Format(id, Mark::Link(url)));
        } else {
            // The text stays, unlinked; the target is not written at all.
            self.out.push(Event::Unanchor(id, String::new()));
        }
    }

    fn flush_text(&mut self) {
        if !self.text.is_empty() {
            self.out.push(Event::Text(std::mem::take(&mut self.text)));
        }
    }
}

/// Whether a model may write this link: `http`, `https` and `mailto` only (no `javascript:`,
/// `data:` or relative targets an editor would resolve against the app).
pub fn safe_link(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    let ok_scheme = ["http://", "https://", "mailto:"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len());
    ok_scheme
        && !url
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '<' || c == '>')
}

/// Decides a line's block from its first characters: `Some((block, prefix length))`, or
/// `None` while more characters are needed. `CodeBlock(None)` means an opening fence.
fn classify(start: &str, complete: bool) -> Option<(Block, usize)> {
    let trimmed = start.trim_start_matches(' ');
    let indent = start.len() - trimmed.len();
    let b = trimmed.as_bytes();
    let Some(&first) = b.first() else {
        return complete.then_some((Block::Paragraph, start.len()));
    };
    // Too few characters to tell yet.
    let undecided = |n: usize| b.len() <= n && !complete;
    let paragraph = Some((Block::Paragraph, indent));
    match first {
        b'#' => {
            let hashes = b.iter().take_while(|&&c| c == b'#').count();
            if hashes > 6 {
                return paragraph;
            }
            match b.get(hashes) {
                Some(b' ') => Some((Block::Heading(hashes as u8), indent + hashes + 1)),
                None if !complete => None,
                _ => paragraph,
            }
        }
        b'-' | b'*' | b'_' | b'+' => {
            if b.len() >= 3 && b.iter().all(|&c| c == first) {
                // `---`: a rule once the line ends; more of the same may follow.
                return if complete {
                    Some((Block::Rule, start.len()))
                } else {
                    None
                };
            }
            if b.len() > 1 && b.iter().all(|&c| c == first) {
                return if complete { paragraph } else { None };
            }
            if undecided(1) {
                return None;
            }
            match (first, b.get(1)) {
                (b'-' | b'*' | b'+', Some(b' ')) => Some((Block::BulletItem, indent + 2)),
                _ => paragraph,
            }
        }
        b'0'..=b'9' => {
            let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 9 {
                return paragraph;
            }
            match (b.get(digits), b.get(digits + 1)) {
                (Some(b'.' | b')'), Some(b' ')) => {
                    let n = trimmed[..digits].parse().unwrap_or(1);
                    Some((Block::OrderedItem(n), indent + digits + 2))
                }
                (None, _) | (Some(b'.' | b')'), None) if !complete => None,
                _ => paragraph,
            }
        }
        b'>' => {
            if undecided(1) {
                return None;
            }
            let skip = if b.get(1) == Some(&b' ') { 2 } else { 1 };
            Some((Block::Quote, indent + skip))
        }
        b'`' => {
            let ticks = b.iter().take_while(|&&c| c == b'`').count();
            if ticks >= 3 {
                return Some((Block::CodeBlock(None), indent + 3));
            }
            if ticks == b.len() && !complete {
                return None;
            }
            paragraph
        }
        _ => paragraph,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rendering of the events, to compare in tests: blocks as `<kind>…</>`, marks as
    /// their names around the text (resolved from anchors).
    fn render(events: &[Event]) -> String {
        // Text per block with marks applied at anchor positions.
        let mut out = String::new();
        let mut block = String::new();
        let mut anchors: std::collections::HashMap<u32, usize> = Default::default();
        let mut inserts: Vec<(usize, String)> = Vec::new();
        let mut kind = String::new();
        for e in events {
            match e {
                Event::Open(b) => {
                    kind = format!("{b:?}");
                    block.clear();
                    inserts.clear();
                }
                Event::Text(t) => block.push_str(t),
                Event::Anchor(id) => {
                    anchors.insert(*id, block.len());
                }
                Event::Format(id, m) => {
                    let at = anchors.remove(id).expect("anchored");
                    let name = match m {
                        Mark::Link(u) => format!("link={u}"),
                        m => format!("{m:?}").to_lowercase(),
                    };
                    block.insert_str(at, &format!("<{name}>"));
                    block.push_str(&format!("</{name}>"));
                }
                Event::Unanchor(id, lit) => {
                    let at = anchors.remove(id).expect("anchored");
                    block.insert_str(at, lit);
                }
                Event::Close => {
                    out.push_str(&format!("[{kind}]{block}\n"));
                    block.clear();
                }
            }
        }
        out
    }

    fn parse_in_pieces(md: &str, size: usize) -> Vec<Event> {
        let mut p = Markdown::new();
        let mut events = Vec::new();
        let chars: Vec<char> = md.chars().collect();
        for piece in chars.chunks(size.max(1)) {
            events.extend(p.push(&piece.iter().collect::<String>()));
        }
        events.extend(p.finish());
        events
    }

    const SAMPLE: &str = "# Title\n\nSome **bold** and *italic* and `code` and a [link](https://x.test/a).\nSecond line.\n\n- one\n- two **b**\n\n1. first\n2. second\n\n> quoted\n\n```rust\nfn main() {}\n  let x = 1;\n```\n\n---\nEnd";

    #[test]
    fn every_block_and_mark_kind() {
        let got = render(&parse_in_pieces(SAMPLE, 1000));
        assert_eq!(
            got,
            "[Heading(1)]Title\n\
             [Paragraph]Some <bold>bold</bold> and <italic>italic</italic> and <code>code</code> and a <link=https://x.test/a>link</link=https://x.test/a>. Second line.\n\
             [BulletItem]one\n\
             [BulletItem]two <bold>b</bold>\n\
             [OrderedItem(1)]first\n\
             [OrderedItem(2)]second\n\
             [Quote]quoted\n\
             [CodeBlock(Some(\"rust\"))]fn main() {}\n  let x = 1;\n\
             [Rule]\n\
             [Paragraph]End\n"
        );
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_structure() {
        let whole = render(&parse_in_pieces(SAMPLE, 1000));
        for size in [1, 2, 3, 5, 7, 13] {
            assert_eq!(
                render(&parse_in_pieces(SAMPLE, size)),
                whole,
                "pieces of {size}"
            );
        }
    }

    #[test]
    fn delimiters_never_show_while_streaming() {
        let mut p = Markdown::new();
        let mut shown = String::new();
        for c in "a **b** c".chars() {
            for e in p.push(&c.to_string()) {
                if let Event::Text(t) = e {
                    shown.push_str(&t);
                }
            }
        }
        assert_eq!(shown, "a b c");
    }

    #[test]
    fn unclosed_delimiters_come_back_as_text() {
        let got = render(&parse_in_pieces("2 * 3 and **open\nsnake_case_name", 1));
        assert_eq!(got, "[Paragraph]2 * 3 and **open snake_case_name\n");
        let got = render(&parse_in_pieces("[not a link] and [x](y z", 2));
        assert_eq!(got, "[Paragraph][not a link] and [x](y z\n");
    }

    #[test]
    fn unsafe_links_keep_their_text_and_lose_their_target() {
        let got = render(&parse_in_pieces(
            "[a](javascript:alert(1)) [b](data:text/html,x) [c](mailto:a@b.test)",
            3,
        ));
        // `javascript:alert(1` ends at the first `)`; the rest is text.
        assert_eq!(
            got,
            "[Paragraph]a) b <link=mailto:a@b.test>c</link=mailto:a@b.test>\n"
        );
        assert!(!safe_link("/relative"));
        assert!(!safe_link("https://"));
        assert!(safe_link("https://example.test/x?y=1"));
    }

    #[test]
    fn escapes_and_headings_that_are_not() {
        let got = render(&parse_in_pieces("\\*lit\\* #tag\n####### seven", 1));
        assert_eq!(got, "[Paragraph]*lit* #tag ####### seven\n");
    }

    #[test]
    fn a_code_block_without_its_closing_fence_ends_with_the_answer() {
        let got = render(&parse_in_pieces("```\na *b*\n", 4));
        assert_eq!(got, "[CodeBlock(None)]a *b*\n");
    }

    #[test]
    fn arbitrary_input_never_panics_and_balances_blocks() {
        let inputs = [
            "",
            "\n\n\n",
            "#",
            "```",
            "``` x",
            "-",
            "1.",
            "1",
            ">",
            "**",
            "*",
            "[",
            "[a]",
            "[a](",
            "`",
            "\\",
            "___\n",
            "#####\n",
            "- \n",
            "1) x\n2) y",
            "> a\n> b",
            "a\r\nb",
            "é*ü*ß",
        ];
        for input in inputs {
            for size in [1, 2, 100] {
                let events = parse_in_pieces(input, size);
                let opens = events
                    .iter()
                    .filter(|e| matches!(e, Event::Open(_)))
                    .count();
                let closes = events.iter().filter(|e| matches!(e, Event::Close)).count();
                assert_eq!(opens, closes, "{input:?} in pieces of {size}");
            }
        }
    }
}
