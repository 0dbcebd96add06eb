//! Statement splitting for the shell: lines go in, complete statements come out. A statement ends
//! with `;` outside quotes ('...', "...", `...`) and comments (`-- ...` to the end of the line,
//! `/* ... */`). Comments are left out of the statements.

/// A complete statement and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub text: String,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Quote(char),
    BlockComment,
}

/// Accumulates lines until statements are complete.
#[derive(Debug)]
pub struct Splitter {
    buf: String,
    state: State,
    /// The line the pending statement starts on, once it has text other than comments.
    start: Option<usize>,
    line: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter { buf: String::new(), state: State::Normal, start: None, line: 0 }
    }
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Whether nothing is pending: no statement text and no open comment or quote.
    pub fn is_empty(&self) -> bool {
        self.start.is_none() && self.state == State::Normal
    }

    /// Forgets the pending text (Ctrl-C at the prompt).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.state = State::Normal;
        self.start = None;
    }

    /// Adds a line (without its newline); returns the statements it completes.
    pub fn push_line(&mut self, line: &str) -> Vec<Stmt> {
        self.line += 1;
        let mut out = vec![];
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match self.state {
                State::Quote(q) => {
                    self.buf.push(c);
                    if c == q {
                        self.state = State::Normal;
                    }
                }
                State::BlockComment => {
                    if c == '*' && chars.peek() == Some(&'/') {
                        chars.next();
                        self.state = State::Normal;
                        self.buf.push(' ');
                    }
                }
                State::Normal => match c {
                    '-' if chars.peek() == Some(&'-') => break,
                    '/' if chars.peek() == Some(&'*') => {
                        chars.next();
                        self.state = State::BlockComment;
                    }
                    ';' => {
                        if let Some(line) = self.start.take() {
                            let text = format!("{};", self.buf.trim());
                            out.push(Stmt { text, line });
                        }
                        self.buf.clear();
                    }
                    c => {
                        if c == '\'' || c == '"' || c == '`' {
                            self.state = State::Quote(c);
                        }
                        if !c.is_whitespace() && self.start.is_none() {
                            self.start = Some(self.line);
                        }
                        self.buf.push(c);
                    }
                },
            }
        }
        if self.start.is_some() || matches!(self.state, State::Quote(_)) {
            self.buf.push('\n');
        } else {
            self.buf.clear();
        }
        out
    }

    /// At the end of the input: the pending text, if any, as a last statement.
    pub fn finish(&mut self) -> Option<Stmt> {
        let line = self.start.take()?;
        let text = format!("{};", self.buf.trim());
        self.clear();
        Some(Stmt { text, line })
    }
}

/// The first word of a statement, upper-cased (`SELECT`, `SET`, ...).
pub fn first_word(text: &str) -> String {
    text.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>().to_uppercase()
}

/// Replaces `${name}` with the variable's value (names compare without regard to case, as in
/// ksqlDB); the substitution is textual, inside quotes too.
pub fn substitute(text: &str, vars: &std::collections::BTreeMap<String, String>) -> String {
    if vars.is_empty() || !text.contains("${") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[at..at + 2 + end + 1]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(script: &str) -> (Vec<Stmt>, Option<Stmt>) {
        let mut s = Splitter::new();
        let out = script.lines().flat_map(|l| s.push_line(l)).collect();
        (out, s.finish())
    }

    fn texts(script: &str) -> Vec<String> {
        split(script).0.into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn statements_end_with_semicolons_outside_quotes_and_comments() {
        assert_eq!(texts("SHOW STREAMS; SHOW TABLES;"), ["SHOW STREAMS;", "SHOW TABLES;"]);
        assert_eq!(
            texts("INSERT INTO s VALUES ('a;b', 'it''s;');\nSELECT `x;y` FROM \"t;\";"),
            ["INSERT INTO s VALUES ('a;b', 'it''s;');", "SELECT `x;y` FROM \"t;\";"]
        );
        assert_eq!(texts("SHOW -- a comment; not a statement\nSTREAMS;"), ["SHOW \nSTREAMS;"]);
        assert_eq!(texts("SHOW /* ; \n ; */ TOPICS;"), ["SHOW \n  TOPICS;"]);
        assert_eq!(texts("; ;  -- nothing\n/* only a comment */;"), Vec::<String>::new());
        assert_eq!(texts("SELECT '--not a comment' FROM x;"), ["SELECT '--not a comment' FROM x;"]);
    }

    #[test]
    fn statements_span_lines_and_know_their_first_line() {
        let (stmts, rest) = split("-- header\n\nCREATE STREAM s (id INT)\n  WITH (kafka_topic='t');\nSHOW\nSTREAMS");
        assert_eq!(stmts, [Stmt { text: "CREATE STREAM s (id INT)\n  WITH (kafka_topic='t');".into(), line: 3 }]);
        assert_eq!(rest, Some(Stmt { text: "SHOW\nSTREAMS;".into(), line: 5 }));
    }

    #[test]
    fn the_splitter_knows_when_a_statement_is_pending() {
        let mut s = Splitter::new();
        assert!(s.is_empty());
        assert!(s.push_line("-- just a comment").is_empty());
        assert!(s.is_empty());
        assert!(s.push_line("SELECT 'a").is_empty());
        assert!(!s.is_empty());
        assert_eq!(s.push_line("b' FROM t;"), [Stmt { text: "SELECT 'a\nb' FROM t;".into(), line: 2 }]);
        assert!(s.is_empty());
        s.push_line("/* open");
        assert!(!s.is_empty());
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn first_words_and_variables() {
        assert_eq!(first_word("  select * from t;"), "SELECT");
        assert_eq!(first_word("PRINT 'x';"), "PRINT");
        let vars = [("Topic".to_string(), "orders".to_string())].into_iter().collect();
        assert_eq!(substitute("PRINT '${topic}' ${TOPIC} ${other} ${", &vars), "PRINT 'orders' orders ${other} ${");
    }
}
