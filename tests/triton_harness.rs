//! A real `tritonserver` for tests and `cargo xtask triton-up`: the install the `triton`
//! setup asset makes, a model repository written from the templates in
//! `tests/data/triton-repo/`, and a server process on 127.0.0.1 that is killed (with its
//! Python backend stubs) when its guard drops.
//!
//! Standard library only, so xtask can include this same file (`#[path]`) and both start
//! the server the same way.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `triton` asset, relative to the workspace root.
pub const TRITON_ASSET: &str = ".dp-assets/triton";

/// The templates, relative to the workspace root.
pub const REPOSITORY_TEMPLATES: &str = "tests/data/triton-repo";

/// The ONNX MiniLM the `all-minilm-l6-v2` deployment runs, relative to the workspace root.
pub const MINILM_ONNX: &str = ".dp-assets/models/all-minilm-l6-v2-onnx/model.onnx";

/// The digest the `affine` and `echo` deployments declare. They have no weights, so any
/// pinned value does: what matters is that the provider compares it with the spec's.
pub const AFFINE_WEIGHTS_DIGEST: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Where the `triton` asset put `tritonserver`, its backends, libraries and Python.
#[derive(Debug, Clone)]
pub struct TritonInstall {
    /// `tritonserver`.
    pub server: PathBuf,
    /// The `--backend-directory` (holds `python/`).
    pub backends: PathBuf,
    /// The venv's `bin/`, first on the server's `PATH` so its Python stubs find the venv's
    /// numpy and onnxruntime.
    pub venv_bin: PathBuf,
    /// The wheel's bundled shared libraries.
    pub libs: PathBuf,
}

impl TritonInstall {
    /// The layout under `triton_dir` (`.dp-assets/triton`).
    #[must_use]
    pub fn at(triton_dir: &Path) -> Self {
        let site = triton_dir.join("venv/lib/python3.11/site-packages");
        Self {
            server: site.join("pytriton/tritonserver/bin/tritonserver"),
            backends: triton_dir.join("backends"),
            venv_bin: triton_dir.join("venv/bin"),
            libs: site.join("nvidia_pytriton.libs"),
        }
    }

    /// The first missing part, if any.
    #[must_use]
    pub fn missing(&self) -> Option<PathBuf> {
        [
            self.server.clone(),
            self.backends.join("python/triton_python_backend_stub"),
            self.venv_bin.clone(),
            self.libs.clone(),
        ]
        .into_iter()
        .find(|p| !p.exists())
    }
}

/// One model of a repository: a template folder deployed under a name, with its
/// `parameters`.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The served name.
    pub name: String,
    /// The template folder under the templates (`affine`, `echo`, `all-minilm-l6-v2`).
    pub template: String,
    /// `weights_digest` as the deployment declares it; `None` leaves it out.
    pub weights_digest: Option<String>,
    /// Further string parameters (`onnx_path` for MiniLM).
    pub parameters: Vec<(String, String)>,
}

impl Deployment {
    /// `template` served under its own name.
    #[must_use]
    pub fn new(template: &str, weights_digest: Option<&str>) -> Self {
        Self {
            name: template.to_owned(),
            template: template.to_owned(),
            weights_digest: weights_digest.map(str::to_owned),
            parameters: Vec::new(),
        }
    }

    /// The same model served under another name.
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// Adds a string parameter.
    #[must_use]
    pub fn parameter(mut self, key: &str, value: &str) -> Self {
        self.parameters.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A protobuf-text string literal.
fn pbtxt_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes a model repository at `repo` (created, must not hold the models yet) from the
/// templates folder.
///
/// # Errors
/// I/O errors, or a template that does not exist.
pub fn write_repository(
    templates: &Path,
    repo: &Path,
    deployments: &[Deployment],
) -> io::Result<()> {
    for d in deployments {
        if !d
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "model name {:?}: use letters, digits, '-', '_', '.'",
                    d.name
                ),
            ));
        }
        let from = templates.join(&d.template);
        let to = repo.join(&d.name);
        std::fs::create_dir_all(to.join("1"))?;
        std::fs::copy(from.join("1/model.py"), to.join("1/model.py"))?;
        let mut parameters = String::new();
        let all = d
            .weights_digest
            .iter()
            .map(|v| ("weights_digest", v.as_str()))
            .chain(d.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (key, value) in all {
            let _ = writeln!(
                parameters,
                "parameters: {{ key: {}, value: {{ string_value: {} }} }}",
                pbtxt_string(key),
                pbtxt_string(value)
            );
        }
        let config = std::fs::read_to_string(from.join("config.pbtxt"))?
            .replace("@NAME@", &d.name)
            .replace("@PARAMETERS@", &parameters);
        std::fs::write(to.join("config.pbtxt"), config)?;
    }
    Ok(())
}

/// The repository `cargo xtask triton-up` and `cargo xtask bench triton` serve: `affine`,
/// `echo`, and `all-minilm-l6-v2` when `minilm_onnx` (with its declared digest) is given.
#[must_use]
pub fn standard_deployments(minilm_onnx: Option<(&Path, &str)>) -> Vec<Deployment> {
    let mut deployments = vec![
        Deployment::new("affine", Some(AFFINE_WEIGHTS_DIGEST)),
        Deployment::new("echo", Some(AFFINE_WEIGHTS_DIGEST)),
    ];
    if let Some((onnx, digest)) = minilm_onnx {
        deployments.push(
            Deployment::new("all-minilm-l6-v2", Some(digest))
                .parameter("onnx_path", &onnx.to_string_lossy()),
        );
    }
    deployments
}

/// A port free on 127.0.0.1 right now.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The status code of `GET path` on 127.0.0.1:`port` (one request, no keep-alive).
///
/// # Errors
/// Connection or read failures.
pub fn http_get_status(port: u16, path: &str) -> io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP status line"))
}

/// A running `tritonserver`; killed with its children when dropped.
#[derive(Debug)]
pub struct TritonServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    /// Whether the server leads its own process group (see [`Self::start`]).
    own_group: bool,
}

impl TritonServer {
    /// Starts `tritonserver` on 127.0.0.1:`port` in explicit model-control mode, loading
    /// `models` from `repo`; its output goes to `log`. Returns at once: see
    /// [`Self::wait_ready`].
    ///
    /// The server leads its own process group, so that [`Self::kill`] also ends the
    /// Python backend stubs it started.
    ///
    /// # Errors
    /// When the process cannot start.
    pub fn start(
        install: &TritonInstall,
        repo: &Path,
        port: u16,
        models: &[&str],
        log: &Path,
    ) -> io::Result<Self> {
        Self::spawn(install, repo, port, models, log, true)
    }

    /// As [`Self::start`], but in the caller's process group, so that Ctrl-C in a
    /// terminal reaches the server and its stubs (`cargo xtask triton-up`).
    ///
    /// # Errors
    /// When the process cannot start.
    pub fn start_foreground(
        install: &TritonInstall,
        repo: &Path,
        port: u16,
        models: &[&str],
        log: &Path,
    ) -> io::Result<Self> {
        Self::spawn(install, repo, port, models, log, false)
    }

    fn spawn(
        install: &TritonInstall,
        repo: &Path,
        port: u16,
        models: &[&str],
        log: &Path,
        own_group: bool,
    ) -> io::Result<Self> {
        let out = std::fs::File::create(log)?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![install.venv_bin.clone()];
        paths.extend(std::env::split_paths(&path));
        let mut libs = vec![install.libs.clone()];
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            libs.extend(std::env::split_paths(&old));
        }
        let mut cmd = Command::new(&install.server);
        cmd.arg(format!("--model-repository={}", repo.display()))
            .arg(format!(
                "--backend-directory={}",
                install.backends.display()
            ))
            .args([
                "--http-address=127.0.0.1",
                &format!("--http-port={port}"),
                "--allow-grpc=false",
                "--allow-metrics=false",
                "--model-control-mode=explicit",
                "--log-verbose=0",
            ])
            .args(models.iter().map(|m| format!("--load-model={m}")))
            .env(
                "PATH",
                std::env::join_paths(paths).map_err(io::Error::other)?,
            )
            .env(
                "LD_LIBRARY_PATH",
                std::env::join_paths(libs).map_err(io::Error::other)?,
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if own_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn()?;
        Ok(Self {
            child: Some(child),
            port,
            log: log.to_owned(),
            own_group,
        })
    }

    /// Waits until the server is ready and each of `models` is ready.
    ///
    /// # Errors
    /// When the server exits or is not ready within `timeout` (the message ends with the
    /// tail of its log).
    pub fn wait_ready(&mut self, models: &[&str], timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "tritonserver exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                )));
            }
            let ready = http_get_status(self.port, "/v2/health/ready").is_ok_and(|s| s == 200)
                && models.iter().all(|m| {
                    http_get_status(self.port, &format!("/v2/models/{m}/ready"))
                        .is_ok_and(|s| s == 200)
                });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "tritonserver not ready after {timeout:?}:\n{}",
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines of the server's log.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the server (SIGKILL; with its process group when it leads one) and reaps it.
    /// Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.own_group {
                // The group id is the child's pid (process_group(0)); `kill -KILL -PGID`
                // reaches the stubs the server started, and nothing else.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the server to exit on its own (used by `cargo xtask triton-up`).
    ///
    /// # Errors
    /// As [`Child::wait`].
    pub fn wait(&mut self) -> io::Result<()> {
        if let Some(child) = &mut self.child {
            child.wait()?;
        }
        self.child = None;
        Ok(())
    }
}

impl Drop for TritonServer {
    fn drop(&mut self) {
        self.kill();
    }
}
