//! The power drivers against the real things where Debian has them: QMP
//! against QEMU (TCG, no disk), `ipmitool` against OpenIPMI's `ipmi_sim`
//! BMC simulator; and against small fakes for what the real things will
//! not do on demand: a QMP socket that errs, babbles or falls silent, and
//! a Redfish service. All on loopback or unix sockets in the test's
//! directory; every process is killed when its test ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_server::power::ipmi::Ipmi;
use shoal_server::power::qmp::Qmp;
use shoal_server::power::redfish::Redfish;
use shoal_server::power::{Action, Power, PowerError, PowerSettings, PowerState};
use shoal_tests::Bed;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn qmp_starts_resets_and_stops_a_real_qemu() {
    let bed = Bed::new();
    let sock = bed.path("qmp.sock");
    let mut qemu = Killed(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-machine", "pc", "-nodefaults", "-display", "none", "-m", "64", "-S"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (make deps)"),
    );
    wait_until("the QMP socket", Duration::from_secs(20), || sock.exists());
    let q = Qmp::new(sock.clone(), Duration::from_secs(10));
    // -S: created, never started.
    assert_eq!(q.status().unwrap(), PowerState::Off);
    q.restart().unwrap();
    assert_eq!(q.status().unwrap(), PowerState::On);
    q.set(Action::Cycle).unwrap();
    assert_eq!(q.status().unwrap(), PowerState::On);
    q.set(Action::Off).unwrap();
    wait_until("QEMU to exit", Duration::from_secs(20), || qemu.0.try_wait().unwrap().is_some());
    assert_eq!(q.status().unwrap(), PowerState::Off);
    // Nothing is left to start from the socket.
    assert!(matches!(q.restart(), Err(PowerError::Io { .. })));
}

/// A fake QMP server on `path` that greets with `greeting` (unless
/// empty), then answers each command line with `answer(command)`.
fn fake_qmp(path: &std::path::Path, greeting: &'static str, answer: fn(&str) -> String) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            if !greeting.is_empty() {
                let _ = s.write_all(greeting.as_bytes());
            }
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = s.write_all(answer(line.trim()).as_bytes());
                line.clear();
            }
        }
    });
}

const HELLO: &str = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n";

#[test]
fn qmp_errors_garbage_and_silence_are_errors_within_the_time_out() {
    let bed = Bed::new();
    let refusing = bed.path("refusing.sock");
    fake_qmp(&refusing, HELLO, |c| {
        if c.contains("qmp_capabilities") {
            // An event first, which the driver must skip.
            "{\"event\": \"RESUME\"}\n{\"return\": {}}\n".into()
        } else {
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"reset is disabled\"}}\n".into()
        }
    });
    match Qmp::new(refusing, Duration::from_secs(5)).set(Action::Cycle) {
        Err(PowerError::Refused { why, .. }) => assert_eq!(why, "reset is disabled"),
        other => panic!("{other:?}"),
    }
    let babbling = bed.path("babbling.sock");
    fake_qmp(&babbling, "this is not json\n", |_| String::new());
    assert!(matches!(Qmp::new(babbling, Duration::from_secs(5)).status(), Err(PowerError::Protocol { .. })));
    let silent = bed.path("silent.sock");
    fake_qmp(&silent, "", |_| String::new());
    let t = Instant::now();
    assert!(matches!(Qmp::new(silent, Duration::from_millis(500)).status(), Err(PowerError::Timeout { .. })));
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// `ipmi_sim` on a free loopback UDP port with user `shoal` / `s3cret`;
/// its chassis control program keeps the power state in a file.
fn ipmi_sim(bed: &Bed) -> (Killed, u16) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let state = bed.path("power-state");
    let ctl = bed.path("chassis.sh");
    std::fs::write(
        &ctl,
        format!(
            "#!/bin/sh\ncase \"$1\" in\nget) echo \"power:$(cat {s} 2>/dev/null || echo 0)\" ;;\n\
             set) [ \"$2\" = power ] && echo \"$3\" > {s} && echo \"$3\" >> {c} ;;\nesac\nexit 0\n",
            s = state.display(),
            c = bed.path("power-calls").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = bed.path("lan.conf");
    std::fs::write(
        &conf,
        format!(
            "name \"shoaltest\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n\
             \x20   allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n\
             \x20   allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n\
             \x20   guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{}\"\n\
             user 2 true \"shoal\" \"s3cret\" admin 10 none md2 md5 straight\n",
            ctl.display()
        ),
    )
    .unwrap();
    let emu = bed.path("emu.cmds");
    std::fs::write(
        &emu,
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    )
    .unwrap();
    let child = Command::new("ipmi_sim")
        .arg("-c")
        .arg(&conf)
        .arg("-f")
        .arg(&emu)
        .arg("-s")
        .arg(bed.path("sim-state"))
        .arg("-n")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ipmi_sim (make deps)");
    (Killed(child), port)
}

#[test]
fn ipmitool_switches_a_simulated_bmc_and_a_wrong_password_fails_in_time() {
    let bed = Bed::new();
    let (_sim, port) = ipmi_sim(&bed);
    let pw = bed.path("ipmi-password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let settings = PowerSettings {
        timeout: Duration::from_secs(20),
        ipmi_password_file: Some(pw.clone()),
        ipmi_cipher: Some(3),
        ..PowerSettings::default()
    };
    let bmc = Ipmi::new(format!("shoal@127.0.0.1:{port}"), &settings);
    let t = Instant::now();
    wait_until("ipmi_sim to answer", Duration::from_secs(20), || bmc.status().is_ok());
    assert_eq!(bmc.status().unwrap(), PowerState::Off);
    // The simulator, like a BMC, switches a moment after it answers.
    let becomes = |want: PowerState| {
        wait_until(&format!("power {want:?}"), Duration::from_secs(10), || bmc.status().unwrap() == want)
    };
    bmc.restart().unwrap();
    becomes(PowerState::On);
    bmc.set(Action::Cycle).unwrap();
    becomes(PowerState::On);
    bmc.set(Action::Off).unwrap();
    becomes(PowerState::Off);
    let calls = std::fs::read_to_string(bed.path("power-calls")).unwrap();
    assert_eq!(calls.lines().collect::<Vec<_>>(), ["1", "0", "1", "0"], "on, then cycle as off and on, then off");
    eprintln!("ipmi: 8 commands in {:.1} s", t.elapsed().as_secs_f64());

    // A wrong password: ipmitool gives up, or retries until the time-out
    // cuts it short; either way an error, in time, not naming the password.
    std::fs::write(&pw, "wrong\n").unwrap();
    let settings = PowerSettings { timeout: Duration::from_secs(4), ..settings };
    let t = Instant::now();
    match Ipmi::new(format!("shoal@127.0.0.1:{port}"), &settings).status() {
        Err(e @ (PowerError::Refused { .. } | PowerError::Timeout { .. })) => {
            assert!(!e.to_string().contains("wrong"), "{e}")
        }
        other => panic!("a wrong password: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// A fake Redfish service for system `/redfish/v1/Systems/1`: its power
/// state, and every reset it was asked for with its Authorization header.
struct FakeBmc {
    url: String,
    state: Arc<Mutex<&'static str>>,
    resets: Arc<Mutex<Vec<(String, String)>>>,
}

fn fake_redfish(refuse: bool) -> FakeBmc {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/redfish/v1/Systems/1", l.local_addr().unwrap());
    let state = Arc::new(Mutex::new("Off"));
    let resets = Arc::new(Mutex::new(Vec::new()));
    let (st, rs) = (Arc::clone(&state), Arc::clone(&resets));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut request = String::new();
            r.read_line(&mut request).unwrap_or(0);
            let (mut len, mut auth) = (0, String::new());
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    auth = h["authorization:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let (status, answer) = if request.starts_with("GET /redfish/v1/Systems/1 ") {
                (200, format!("{{\"Id\": \"1\", \"PowerState\": \"{}\"}}", st.lock().unwrap()))
            } else if request.starts_with("POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset ") && refuse {
                (
                    400,
                    "{\"error\": {\"code\": \"Base.1.0.GeneralError\", \"message\": \"the chassis is locked\"}}".into(),
                )
            } else if request.starts_with("POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset ") {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let kind = v["ResetType"].as_str().unwrap_or("").to_string();
                *st.lock().unwrap() = if kind == "ForceOff" { "Off" } else { "On" };
                rs.lock().unwrap().push((kind, auth));
                (204, String::new())
            } else {
                (404, String::new())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    FakeBmc { url, state, resets }
}

#[test]
fn redfish_resets_a_system_with_basic_auth_and_reports_the_bmc_s_refusal() {
    let bed = Bed::new();
    let creds = bed.path("redfish");
    std::fs::write(&creds, "admin:pa55\n").unwrap();
    let settings = PowerSettings { redfish_credentials: Some(creds), ..PowerSettings::default() };
    let bmc = fake_redfish(false);
    let r = Redfish::new(bmc.url.clone(), &settings);
    assert_eq!(r.status().unwrap(), PowerState::Off);
    r.restart().unwrap();
    assert_eq!(*bmc.state.lock().unwrap(), "On");
    r.restart().unwrap();
    r.set(Action::Off).unwrap();
    let resets = bmc.resets.lock().unwrap().clone();
    let kinds: Vec<&str> = resets.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["On", "ForceRestart", "ForceOff"]);
    // base64("admin:pa55")
    assert!(resets.iter().all(|(_, a)| a == "Basic YWRtaW46cGE1NQ=="), "{resets:?}");

    let locked = fake_redfish(true);
    match Redfish::new(locked.url.clone(), &settings).set(Action::Cycle) {
        Err(PowerError::Refused { why, .. }) => {
            assert!(why.contains("the chassis is locked") && why.contains("400"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
