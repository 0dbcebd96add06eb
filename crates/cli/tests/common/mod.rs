//! A real `freshet serve` process for tests: started on an ephemeral port, killed with SIGKILL
//! or stopped with SIGTERM, restarted on the same data directory and port.
#![allow(dead_code)]

pub mod rest;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub port: u16,
    /// The HTTP (ksqlDB REST) listener's address; a fresh port on every start unless the extra
    /// arguments set `--http-listen`.
    pub http: String,
    pub data_dir: PathBuf,
    extra: Vec<String>,
    /// Set for a `serve --external-kafka` process (no broker; its data directory holds only
    /// the SQL state files): the cluster's bootstrap address. `addr` is then that address too,
    /// and `port` 0.
    external: Option<String>,
    /// An external server's own data directory, removed with the server.
    _owned_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh port.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, 0, &[])
    }

    /// Starts a server with extra `serve` arguments.
    pub fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_freshet"));
        cmd.arg("serve").arg("--data-dir").arg(data_dir).arg("--kafka-listen").arg(format!("127.0.0.1:{port}"));
        let (child, http, addr) = Self::launch(cmd, extra, true);
        let addr = addr.expect("the kafka listener's address");
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Server {
            child: Some(child),
            addr,
            port,
            http,
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            external: None,
            _owned_dir: None,
        }
    }

    /// Starts `serve --external-kafka BOOTSTRAP`: the SQL engine and the HTTP listener only, all
    /// topics in the cluster at `bootstrap`. Waits for the HTTP listener.
    pub fn start_external(bootstrap: &str, extra: &[&str]) -> Server {
        Self::start_external_env(bootstrap, extra, &[])
    }

    /// [`Server::start_external`] with environment variables for this first process only (a
    /// restart goes without them): e.g. `FRESHET_FAILPOINTS`.
    pub fn start_external_env(bootstrap: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("a data directory");
        let mut s = Self::start_external_in(bootstrap, dir.path(), extra, env);
        s._owned_dir = Some(dir);
        s
    }

    fn start_external_in(bootstrap: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_freshet"));
        cmd.arg("serve").arg("--external-kafka").arg(bootstrap).arg("--data-dir").arg(data_dir);
        cmd.envs(env.iter().copied());
        let (child, http, _) = Self::launch(cmd, extra, false);
        Server {
            child: Some(child),
            addr: bootstrap.to_string(),
            port: 0,
            http,
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            external: Some(bootstrap.to_string()),
            _owned_dir: None,
        }
    }

    /// Spawns `cmd` with `extra` and waits (bounded) for its HTTP line and, if `kafka`, its Kafka
    /// line: (child, HTTP address, Kafka address).
    fn launch(mut cmd: Command, extra: &[&str], kafka: bool) -> (Child, String, Option<String>) {
        cmd.args(extra)
            .args(if extra.contains(&"--http-listen") { &[][..] } else { &["--http-listen", "127.0.0.1:0"][..] })
            .env("FRESHET_LOG", std::env::var("FRESHET_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn freshet serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut http = String::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("freshet: http listener on ") {
                        http = rest.trim().to_string();
                        if !kafka {
                            break None;
                        }
                    }
                    if let Some(rest) = line.strip_prefix("freshet: kafka listener on ") {
                        break Some(rest.split_whitespace().next().expect("address").to_string());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("freshet serve did not start listening within {START_TIMEOUT:?}");
                }
            }
        };
        (child, http, addr)
    }

    /// Waits (bounded) for the process to end by itself (a failpoint); false if it did not.
    #[allow(dead_code)]
    pub fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("server is running");
            if child.try_wait().expect("wait").is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the process with SIGKILL: no flush, no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("freshet serve did not stop within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a new process on the same data directory and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        if let Some(bootstrap) = &self.external {
            let mut s = Server::start_external_in(bootstrap, &self.data_dir, &extra, &[]);
            self.child = s.child.take();
            self.http = std::mem::take(&mut s.http);
            return;
        }
        // The port was just released; retry briefly if the OS still holds it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = std::panic::catch_unwind(|| Server::start_with(&self.data_dir, self.port, &extra));
            match attempt {
                Ok(mut s) => {
                    self.child = s.child.take();
                    self.http = std::mem::take(&mut s.http);
                    return;
                }
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `f` until it returns Some, or panics after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether client tools are required (CI) rather than skipped when missing.
pub fn clients_required() -> bool {
    std::env::var("FRESHET_REQUIRE_CLIENTS").is_ok_and(|v| v == "1")
}

/// Says a client is missing: a skip locally, a failure where clients are required.
pub fn missing(what: &str) {
    if clients_required() {
        panic!("{what} is required (FRESHET_REQUIRE_CLIENTS=1) but not available");
    }
    eprintln!("SKIPPED: {what} is not available; .ci/run installs it");
}

/// The Python with confluent-kafka and kafka-python (FRESHET_PYTHON), if there is one.
pub fn python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("FRESHET_PYTHON")?);
    p.exists().then_some(p)
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python client script from tests/clients/python.
pub fn python_script(name: &str) -> Command {
    let mut c = Command::new(python().expect("python"));
    c.arg(repo().join("tests/clients/python").join(name));
    c
}

/// A config file for `serve` with fast group timeouts (tests wait for dead members).
pub fn fast_groups_config(dir: &Path) -> PathBuf {
    let path = dir.join("freshet-test.toml");
    std::fs::write(
        &path,
        "group_min_session_timeout_ms = 1000\nconsumer_group_session_timeout_ms = 6000\nconsumer_group_heartbeat_interval_ms = 500\n",
    )
    .unwrap();
    path
}
