//! Real servers a test starts for itself: a PostgreSQL cluster that accepts
//! only TLS with a password (certificates from a test CA made with openssl),
//! and pgbouncer in front of the test server. Both run as the unprivileged
//! `postgres` user when the tests run as root, and stop on drop.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shipsafe_pg::PgBinaries;

/// The password of the TLS cluster's `postgres` role: every character that
/// needs percent-encoding in a URL.
pub const TLS_PASSWORD: &str = "S3cr@t/p?ss#w%rd";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` run as `postgres` when we are root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder the server user owns (0700).
fn server_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("test folder");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    if is_root() {
        run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir),
            "chown",
        );
    }
    dir
}

fn wait_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "server exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs openssl in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    run(
        Command::new("openssl").args(args).current_dir(dir),
        &format!("openssl {}", args.join(" ")),
    )
}

/// Signs `csr` with the CA in `dir` (v3 extensions from `ext`) into `out`.
fn sign(dir: &Path, csr: &str, ext: &str, out: &str) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            out,
        ],
    );
}

/// Certificates of a test CA: `ca.pem`, and `server.pem`/`server.key` for
/// the names given (`DNS:localhost`, ...).
#[derive(Debug)]
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, names: &str) -> Self {
        std::fs::create_dir_all(dir).expect("ca folder");
        let o = |args: &[&str]| openssl(dir, args);
        o(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=shipsafe test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        o(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=test server",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.join("san.ext"), format!("subjectAltName={names}\n")).expect("ext");
        sign(dir, "server.csr", "san.ext", "server.pem");
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client certificate for role `user` signed by this CA: (cert, key).
    pub fn client(&self, user: &str) -> (PathBuf, PathBuf) {
        let o = |args: &[&str]| openssl(&self.dir, args);
        let (crt, key, csr) = (
            format!("{user}.pem"),
            format!("{user}.key"),
            format!("{user}.csr"),
        );
        o(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={user}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        // Extensions make it a v3 certificate, which rustls requires.
        std::fs::write(
            self.dir.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        )
        .expect("client.ext");
        sign(&self.dir, &csr, "client.ext", &crt);
        let key = self.dir.join(key);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (self.dir.join(crt), key)
    }
}

/// A cluster on 127.0.0.1 that accepts only TLS (`hostssl`) with a
/// scram-sha-256 password ([`TLS_PASSWORD`]); its certificate names only
/// `localhost`.
#[derive(Debug)]
pub struct TlsCluster {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
    pub ca: TestCa,
}

impl TlsCluster {
    pub fn start() -> Self {
        let bins = PgBinaries::find(None, &["postgres", "initdb"]).expect("server binaries");
        let dir = server_dir("shipsafe-tls-test");
        let ca = TestCa::new(&dir.join("ca"), "DNS:localhost");
        let data = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, TLS_PASSWORD).expect("pw file");
        for f in [&pwfile, &dir.join("ca/server.key")] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
                "chown",
            );
        }
        run(
            as_server_user(&bins.path("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=scram-sha-256", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .stdout(Stdio::null()),
            "initdb",
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
        )
        .expect("pg_hba");
        let port = free_port();
        let log = dir.join("log");
        let logf = std::fs::File::create(&log).expect("log");
        let mut child = as_server_user(&bins.path("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "ssl=on",
                "-c",
                "fsync=off",
            ])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("ca/server.pem").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                dir.join("ca/server.key").display()
            ))
            .arg("-c")
            .arg(format!("ssl_ca_file={}", dir.join("ca/ca.pem").display()))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("start postgres");
        wait_port(port, &mut child, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(data.join("postmaster.pid"))
            .map_or(true, |t| t.lines().nth(7).map(str::trim) != Some("ready"))
        {
            assert!(Instant::now() < deadline, "TLS cluster not ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            dir,
            port,
            ca,
        }
    }

    /// A URL as a user would write it: password percent-encoded.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgresql://postgres:{}@{host}:{}/postgres?{params}",
            encode(TLS_PASSWORD),
            self.port
        )
    }
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Stops the server whose pid is the first line of `pidfile` (the process
/// under `runuser`), then reaps `child`.
fn stop(child: &mut Child, pidfile: &Path, dir: &Path) {
    let pid = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
    let target = pid.unwrap_or(child.id() as i32);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(target),
        nix::sys::signal::Signal::SIGINT,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        stop(
            &mut self.child,
            &self.dir.join("data/postmaster.pid"),
            &self.dir,
        );
    }
}

/// pgbouncer in front of the test server (`upstream_port` on 127.0.0.1),
/// in `transaction` or `session` pool mode, any user name accepted.
#[derive(Debug)]
pub struct Pgbouncer {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Pgbouncer {
    pub fn start(upstream_port: u16, mode: &str) -> Self {
        Self::start_ignoring(upstream_port, mode, "extra_float_digits,options")
    }

    /// [`Pgbouncer::start`] with `ignore_startup_parameters = ignore`
    /// (pgbouncer's own default is none: a client sending `options` it
    /// cannot handle is refused).
    pub fn start_ignoring(upstream_port: u16, mode: &str, ignore: &str) -> Self {
        let dir = server_dir("shipsafe-pgbouncer-test");
        let port = free_port();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={upstream_port} user=postgres\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = any\npool_mode = {mode}\n\
                 default_pool_size = 10\nmax_client_conn = 50\n\
                 ignore_startup_parameters = {ignore}\n\
                 logfile = {}\npidfile = {}\n",
                dir.join("log").display(),
                dir.join("pid").display()
            ),
        )
        .expect("pgbouncer.ini");
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
                "chown",
            );
        }
        let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("pgbouncer is installed (scripts/setup)");
        let mut child = as_server_user(&bin)
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        wait_port(port, &mut child, &dir.join("log"));
        Self { child, dir, port }
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        stop(&mut self.child, &self.dir.join("pid"), &self.dir);
    }
}
