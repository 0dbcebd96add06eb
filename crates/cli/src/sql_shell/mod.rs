//! `freshet sql`: an interactive SQL shell and script runner against the ksqlDB-compatible REST API
//! of `freshet serve`, like ksqlDB's CLI. [`split`] turns lines into statements, [`client`] talks
//! HTTP (`/ksql`, and `/query` for SELECT and PRINT, streamed), [`render`] prints the answers.
//!
//! SET/UNSET and DEFINE/UNDEFINE are kept by the shell and sent with every statement (as
//! `streamsProperties` and `sessionVariables`); everything else goes to the server one statement
//! at a time.

pub(crate) mod client;
pub(crate) mod render;
mod split;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use freshet_sql::ast::Statement;

use client::{Client, Event, KsqlReply};
use split::{Splitter, Stmt};

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The SQL server: the HTTP address of `freshet serve` (its --http-listen), ADDR:PORT.
    #[arg(long, env = "FRESHET_HTTP", default_value = "127.0.0.1:8088", value_name = "ADDR:PORT")]
    http: String,
    /// Run the statements of this file ('-' for standard input) and exit; stops at the first error.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A property for every statement, as `SET 'KEY'='VALUE';` would (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = pair)]
    set: Vec<(String, String)>,
    /// A variable for `${NAME}` in statements, as `DEFINE NAME = 'VALUE';` would (repeatable).
    #[arg(long = "define", value_name = "NAME=VALUE", value_parser = pair)]
    define: Vec<(String, String)>,
}

fn pair(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

const HELP: &str = "\
Statements end with ';' and may span lines. They run on the server, e.g.:
  CREATE STREAM s (id STRING KEY, n INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1, VALUE_FORMAT='JSON');
  CREATE TABLE t AS SELECT id, COUNT(*) AS c FROM s GROUP BY id EMIT CHANGES;
  INSERT INTO s (id, n) VALUES ('a', 1);
  SHOW STREAMS;  SHOW TABLES;  SHOW QUERIES;  SHOW TOPICS;  DESCRIBE s [EXTENDED];
  SELECT * FROM s EMIT CHANGES [LIMIT n];   (a push query: rows print as they come; Ctrl-C stops it)
  TERMINATE query_id;  DROP STREAM s [DELETE TOPIC];
Kept by the shell and sent with every statement:
  SET 'auto.offset.reset'='earliest';  UNSET 'auto.offset.reset';  SHOW PROPERTIES;
  DEFINE name = 'value';  UNDEFINE name;  SHOW VARIABLES;   (use as ${name})
Shell commands (no ';' needed): help, exit, quit. Ctrl-C clears the line, Ctrl-D leaves.
";

/// Set by SIGINT while the interactive shell runs a statement (readline handles its own).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_sigint() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// What became of a statement.
enum Done {
    Ok,
    /// The server (or the shell) refused it; the message was printed.
    Failed,
    Exit,
}

struct Session {
    client: Client,
    props: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
}

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn failed(message: &str) -> Done {
    eprintln!("{}", message.trim_end());
    Done::Failed
}

/// A client-side command typed alone on a line: `exit`, `quit`, `help`.
fn shell_command(line: &str) -> Option<&'static str> {
    let word = line.trim().trim_end_matches(';').trim().to_ascii_lowercase();
    match word.as_str() {
        "exit" | "quit" => Some("exit"),
        "help" | "?" => Some("help"),
        _ => None,
    }
}

impl Session {
    fn run(&mut self, stmt: &Stmt) -> Result<Done> {
        match split::first_word(&stmt.text).as_str() {
            "SET" | "UNSET" | "DEFINE" | "UNDEFINE" => Ok(self.local(stmt)),
            "SELECT" | "PRINT" => self.query(stmt),
            "EXIT" | "QUIT" if shell_command(&stmt.text).is_some() => Ok(Done::Exit),
            "HELP" if shell_command(&stmt.text).is_some() => {
                out(HELP);
                Ok(Done::Ok)
            }
            _ => self.ksql(stmt),
        }
    }

    /// SET, UNSET, DEFINE, UNDEFINE: kept in the session, parsed as the server would.
    fn local(&mut self, stmt: &Stmt) -> Done {
        let text = split::substitute(&stmt.text, &self.vars);
        let parsed = match freshet_sql::parser::parse_statement(&text, &Default::default()) {
            Ok(s) => s,
            Err(e) => return failed(&e.to_string()),
        };
        match parsed {
            Statement::Set { name, value } => {
                out(&format!("Successfully changed local property '{name}' to '{value}'.\n"));
                self.props.insert(name, value);
            }
            Statement::Unset(name) => match self.props.remove(&name) {
                Some(old) => out(&format!("Successfully unset local property '{name}' (value was '{old}').\n")),
                None => return failed(&format!("Property '{name}' is not set.")),
            },
            Statement::Define { name, value } => {
                self.vars.insert(name, value);
            }
            Statement::Undefine(name) => {
                let key = self.vars.keys().find(|k| k.eq_ignore_ascii_case(&name)).cloned();
                match key {
                    Some(k) => {
                        self.vars.remove(&k);
                    }
                    None => eprintln!("WARNING: variable '{name}' is not defined."),
                }
            }
            _ => return failed("expected SET, UNSET, DEFINE or UNDEFINE"),
        }
        Done::Ok
    }

    fn ksql(&mut self, stmt: &Stmt) -> Result<Done> {
        let text = split::substitute(&stmt.text, &self.vars);
        match self.client.ksql(&text, &self.props, &self.vars)? {
            KsqlReply::Error(message) => Ok(failed(&message)),
            KsqlReply::Entities(entities) => {
                for e in &entities {
                    for w in render::warnings(e) {
                        eprintln!("WARNING: {w}");
                    }
                    out(&render::entity(e));
                }
                Ok(Done::Ok)
            }
        }
    }

    /// SELECT and PRINT: `/query`, the rows printed as they come (push queries) or all at once in
    /// fitted columns (pull queries). Ctrl-C stops the query in the interactive shell.
    fn query(&mut self, stmt: &Stmt) -> Result<Done> {
        let text = split::substitute(&stmt.text, &self.vars);
        let stream = match self.client.query(&text, &self.props, &self.vars) {
            Ok(s) => s,
            Err(Ok(message)) => return Ok(failed(&message)),
            Err(Err(e)) => return Err(e),
        };
        let streaming =
            text.to_ascii_uppercase().split_whitespace().any(|w| w == "EMIT") || split::first_word(&text) == "PRINT";
        let stopper = stream.stopper()?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || stream.for_each(|e| tx.send(e).is_ok()));
        INTERRUPTED.store(false, Ordering::SeqCst);
        let mut printer = RowPrinter { streaming, ..Default::default() };
        let mut interrupted = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(e) => printer.event(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if INTERRUPTED.swap(false, Ordering::SeqCst) {
                        interrupted = true;
                        stopper.stop();
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        drop(rx);
        let result = reader.join().unwrap_or_else(|_| bail!("the query reader failed"));
        if interrupted {
            out("\n"); // after the terminal's ^C
        }
        printer.finish();
        if interrupted {
            out("Query terminated\n");
            return Ok(Done::Ok);
        }
        if let Err(e) = result {
            return Ok(failed(&format!("the query's answer broke off: {e}")));
        }
        Ok(if printer.error { Done::Failed } else { Done::Ok })
    }
}

/// Prints `/query` events: a box of rows, then the final message.
#[derive(Default)]
struct RowPrinter {
    streaming: bool,
    columns: Vec<String>,
    widths: Vec<usize>,
    /// Pull queries: rows kept to fit the columns.
    rows: Vec<Vec<String>>,
    open: bool,
    final_message: Option<String>,
    error: bool,
}

impl RowPrinter {
    fn event(&mut self, e: Event) {
        match e {
            Event::Header { columns, .. } => {
                self.columns = columns;
                if self.streaming {
                    self.widths = render::stream_widths(&self.columns);
                    out(&(render::box_header(&self.widths, &self.columns) + "\n"));
                    self.open = true;
                }
            }
            Event::Row(values) => {
                let cells: Vec<String> = values.iter().map(render::cell).collect();
                if self.streaming {
                    if !self.open {
                        self.columns = (1..=cells.len()).map(|i| format!("COL{i}")).collect();
                        self.widths = render::stream_widths(&self.columns);
                        out(&(render::box_header(&self.widths, &self.columns) + "\n"));
                        self.open = true;
                    }
                    out(&(render::box_row(&self.widths, &cells) + "\n"));
                } else {
                    self.rows.push(cells);
                }
            }
            Event::Final(m) => self.final_message = Some(m),
            Event::Error(m) => {
                self.error = true;
                eprintln!("{m}");
            }
            Event::Other(line) => out(&(line + "\n")),
        }
    }

    fn finish(&mut self) {
        if !self.streaming && (!self.columns.is_empty() || !self.rows.is_empty()) {
            if self.columns.is_empty() {
                self.columns = (1..=self.rows[0].len()).map(|i| format!("COL{i}")).collect();
            }
            self.widths = render::fitted_widths(&self.columns, &self.rows);
            let mut text = render::box_header(&self.widths, &self.columns) + "\n";
            for r in &self.rows {
                text += &(render::box_row(&self.widths, r) + "\n");
            }
            out(&text);
            self.open = true;
        }
        if self.open {
            out(&(render::box_rule(&self.widths) + "\n"));
        }
        if let Some(m) = self.final_message.take() {
            out(&(m + "\n"));
        }
    }
}

/// The history file: `~/.freshet_sql_history`.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".freshet_sql_history"))
}

fn interactive(session: &mut Session, server_version: &str) -> Result<()> {
    use rustyline::error::ReadlineError;
    let config = rustyline::Config::builder().max_history_size(5000)?.auto_add_history(false).build();
    let mut editor = rustyline::DefaultEditor::with_config(config).context("starting the line editor")?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    catch_sigint();
    out(&format!(
        "Freshet SQL shell, server http://{} (ksqlDB {server_version} API).\n\
         Statements end with ';'. Type 'help' for help, 'exit' or Ctrl-D to leave.\n\n",
        session.client.addr()
    ));
    let mut splitter = Splitter::new();
    // The lines of the statement being typed: one history entry once it is complete.
    let mut typed: Vec<String> = vec![];
    'lines: loop {
        let prompt = if splitter.is_empty() { "freshet> " } else { "      >> " };
        let input = match editor.readline(prompt) {
            Ok(input) => input,
            Err(ReadlineError::Interrupted) => {
                splitter.clear();
                typed.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading a line"),
        };
        if splitter.is_empty() {
            if let Some(command) = shell_command(&input) {
                let _ = editor.add_history_entry(input.trim());
                if command == "exit" {
                    break;
                }
                out(HELP);
                continue;
            }
        }
        // A statement recalled from history comes back as one input of several lines.
        let mut stmts = vec![];
        for line in input.lines() {
            stmts.extend(splitter.push_line(line));
        }
        if !input.trim().is_empty() {
            typed.push(input);
        }
        if splitter.is_empty() && !typed.is_empty() {
            let _ = editor.add_history_entry(typed.join("\n"));
            typed.clear();
        }
        for stmt in &stmts {
            match session.run(stmt) {
                Ok(Done::Exit) => break 'lines,
                Ok(_) => {}
                // The server went away: say so and keep the shell.
                Err(e) => eprintln!("{e:#}"),
            }
        }
        if !stmts.is_empty() {
            out("\n");
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Runs the statements of `input` in order; the first failure stops it with an error naming
/// the statement.
fn script(session: &mut Session, input: &mut dyn BufRead, source: &str) -> Result<()> {
    let mut splitter = Splitter::new();
    let mut line = String::new();
    loop {
        line.clear();
        let eof = input.read_line(&mut line).with_context(|| format!("reading {source}"))? == 0;
        let stmts = if eof {
            splitter.finish().into_iter().collect()
        } else {
            if splitter.is_empty() && shell_command(&line) == Some("exit") {
                return Ok(());
            }
            splitter.push_line(line.trim_end_matches(['\n', '\r']))
        };
        for stmt in stmts {
            match session.run(&stmt)? {
                Done::Ok => {}
                Done::Exit => return Ok(()),
                Done::Failed => bail!("{source}:{}: the statement failed: {}", stmt.line, stmt.text),
            }
        }
        if eof {
            return Ok(());
        }
    }
}

pub fn run(args: SqlArgs) -> Result<()> {
    let client = Client::new(&args.http)?;
    // The script is opened before the server is asked anything: a wrong path is said first.
    let input: Option<(Box<dyn BufRead>, String)> = match &args.file {
        Some(path) if path.as_os_str() == "-" => Some((Box::new(std::io::stdin().lock()), "<stdin>".into())),
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            Some((Box::new(std::io::BufReader::new(file)), path.display().to_string()))
        }
        None if std::io::stdin().is_terminal() => None,
        None => Some((Box::new(std::io::stdin().lock()), "<stdin>".into())),
    };
    let info = client.info()?;
    let mut session =
        Session { client, props: args.set.into_iter().collect(), vars: args.define.into_iter().collect() };
    match input {
        Some((mut input, source)) => script(&mut session, &mut input, &source),
        None => interactive(&mut session, info["version"].as_str().unwrap_or("?")),
    }
}
