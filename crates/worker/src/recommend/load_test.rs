//! One `Advanced` test: start `temper-serve` on the prepared model with the configuration's
//! serving options, play the traffic pattern against it with `temper_serve::load`, and read
//! what the server process used while it ran.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use temper_pipeline::progress::Cancel;
use temper_serve::load::{self, LoadReport, Pattern, Payload, StopConditions};

/// How long a model may take to load before the test is failed.
const STARTUP_LIMIT: Duration = Duration::from_secs(900);

/// The `temper-serve` binary: `TEMPER_SERVE_EXE`, else beside this worker.
pub fn serve_exe() -> PathBuf {
    if let Some(exe) = std::env::var_os("TEMPER_SERVE_EXE") {
        return PathBuf::from(exe);
    }
    std::env::current_exe()
        .map(|w| w.with_file_name("temper-serve"))
        .unwrap_or_else(|_| PathBuf::from("temper-serve"))
}

/// A running `temper-serve`, ended when dropped.
struct Server {
    child: Child,
    url: String,
    setup_seconds: f64,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Whether `GET /ping` at `addr` answers 200.
fn ping(addr: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

impl Server {
    fn start(
        exe: &Path,
        model: &Path,
        environment: &BTreeMap<String, String>,
        log: &Path,
        cancel: &Cancel,
    ) -> Result<Server, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut cmd = Command::new(exe);
        cmd.arg("--model")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .env_remove("SAGEMAKER_BIND_TO_PORT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // The serving options the configuration sweeps reach the server as a SageMaker
        // endpoint's environment would; none of the worker's own leaks into a test that
        // does not sweep it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OPTION_") || k == "SM_MODEL_DIR" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in environment {
            cmd.env(k, v.trim());
        }
        // SAFETY: between fork and exec only async-signal-safe prctl is called. The server
        // dies with the thread that started it, so a worker that dies does not leave it
        // running (this thread holds it for its whole test).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            format!(
                "starting the model server {}: {e}; build it (cargo build --release -p \
                 temper-serve) beside temper-worker, or set TEMPER_SERVE_EXE",
                exe.display()
            )
        })?;
        let mut server = Server {
            child,
            url: String::new(),
            setup_seconds: 0.0,
        };
        loop {
            if cancel.is_cancelled() {
                return Err("stopped".into());
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "the model server exited ({status}) before serving: {}",
                    tail(log)
                ));
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(addr) = text
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            {
                if ping(addr) {
                    server.url = format!("http://{addr}");
                    server.setup_seconds = started.elapsed().as_secs_f64();
                    return Ok(server);
                }
            }
            if started.elapsed() > STARTUP_LIMIT {
                return Err(format!(
                    "the model server did not answer /ping within {} s: {}",
                    STARTUP_LIMIT.as_secs(),
                    tail(log)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The peak resident memory of process `pid`, bytes (`VmHWM`).
fn peak_rss(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// CPU seconds process `pid` has used (user + system).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// What one test measured.
#[derive(Debug)]
pub struct TestRun {
    pub report: LoadReport,
    pub setup_seconds: f64,
    /// Peak memory of the server as a share of this host's, percent.
    pub memory_utilization: Option<f64>,
    /// The server's CPU time over the test as a share of every core's, percent.
    pub cpu_utilization: Option<f64>,
    pub started: f64,
    pub ended: f64,
}

/// Serves `model` with `environment` and plays `pattern` against it.
#[allow(clippy::too_many_arguments)]
pub fn run(
    exe: &Path,
    model: &Path,
    environment: &BTreeMap<String, String>,
    log: &Path,
    pattern: &Pattern,
    payloads: &[Payload],
    stop: &StopConditions,
    cancel: &Cancel,
    host_memory: f64,
) -> Result<TestRun, String> {
    let server = Server::start(exe, model, environment, log, cancel)?;
    let cpu_before = cpu_seconds(server.pid());
    let started_wall = Instant::now();
    let started = temper_api::EpochSeconds::now().0;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the load generator: {e}"))?;
    let report = runtime.block_on(async {
        let watch = async {
            while !cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            r = load::run(&server.url, pattern, payloads, stop) => r.map_err(|e| e.to_string()),
            _ = watch => Err("stopped".to_string()),
        }
    })?;
    let wall = started_wall.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu_utilization = match (cpu_before, cpu_seconds(server.pid())) {
        (Some(a), Some(b)) if wall > 0.0 => Some(100.0 * (b - a) / (wall * cores)),
        _ => None,
    };
    let memory_utilization = peak_rss(server.pid()).map(|b| 100.0 * b / host_memory);
    Ok(TestRun {
        report,
        setup_seconds: server.setup_seconds,
        memory_utilization,
        cpu_utilization,
        started,
        ended: temper_api::EpochSeconds::now().0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let pid = std::process::id();
        assert!(peak_rss(pid).is_some_and(|b| b > 1e6));
        // Spend a little CPU so that the counter is above zero.
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_seconds(pid).is_some_and(|s| s > 0.0));
        assert!(!ping("127.0.0.1:1"));
    }
}
