//! The metadata service in a network test bed: `shoal server` in the
//! server namespace, also listening on 169.254.169.254:80, and nodes in
//! namespaces at their registered addresses. Each node reads only its own
//! data whatever headers it forges; `shoal-agent firstboot` configures a
//! throwaway root from it (and copes with the service being down); real
//! cloud-init (Debian's package) reads the EC2 and NoCloud endpoints
//! confined to a throwaway root in a mount+UTS namespace, so the host is
//! never touched. Needs root and `make deps` (cloud-init, curl).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::netbed::{Host, NetBed};
use shoal_tests::*;

const METADATA_IP: &str = "169.254.169.254";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@desk";

/// A server with project `lab` and its token, nodes `pc0`.. registered at
/// the bed's node addresses, each with a current instance.
struct Lab {
    bed: Bed,
    net: NetBed,
    token: String,
    url: String,
    /// Each node's initial password, as the owner was shown it.
    passwords: Vec<String>,
}

impl Lab {
    fn new(nodes: usize) -> Lab {
        let bed = Bed::new();
        fs::create_dir_all(bed.store()).unwrap();
        bed.ok(&["project", "create", "lab"]);
        let token = bed.ok(&["token", "create", "--project", "lab"]).trim().to_string();
        let mut net = NetBed::new(nodes);
        let srv = net.server.clone();
        sh(srv.command("ip").args(["addr", "add", &format!("{METADATA_IP}/32"), "dev", "eth0"]));
        for n in &net.nodes {
            sh(n.command("ip").args(["route", "add", &format!("{METADATA_IP}/32"), "dev", "eth0"]));
        }
        let mut server = srv.command(shoal_bin());
        server
            .args([
                "server",
                "--listen",
                &format!("{}:4870", srv.addr),
                "--metadata-listen",
                &format!("{METADATA_IP}:80"),
            ])
            .args(["--metadata-zone", "lab-a"])
            .env("SHOAL_DATA_DIR", bed.store())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(bed.path("server.log")).unwrap()));
        net.spawn(server);
        let url = format!("http://{}:4870", srv.addr);
        let start = Instant::now();
        while !srv
            .command("curl")
            .args(["-sf", &format!("{url}/v1/openapi.json"), "-o", "/dev/null"])
            .status()
            .unwrap()
            .success()
        {
            assert!(start.elapsed() < Duration::from_secs(30), "the server did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut lab = Lab { bed, net, token, url, passwords: Vec::new() };
        for (i, n) in lab.net.nodes.clone().iter().enumerate() {
            let name = format!("pc{i}");
            let mac = format!("52:54:00:12:00:{i:02x}");
            lab.cli(&["node", "register", &name, "--mac", &mac, "--type", "pc", "--ip", &n.addr.to_string()]);
            let v: serde_json::Value = serde_json::from_str(&lab.cli(&["--json", "node", "instance", &name])).unwrap();
            lab.passwords.push(v["initial_password"].as_str().unwrap().to_string());
        }
        lab
    }

    /// `shoal ARGS` as the project's client; must succeed.
    fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_out(args);
        assert!(out.status.success(), "shoal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The server is reachable only inside the bed: the CLI runs in the
    /// server's namespace.
    fn cli_out(&self, args: &[&str]) -> Output {
        self.net
            .server
            .command(shoal_bin())
            .args(args)
            .env("SHOAL_URL", &self.url)
            .env("SHOAL_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn node(&self, i: usize) -> Host {
        self.net.nodes[i].clone()
    }
}

/// `curl` from `host`: status and body.
fn curl(host: &Host, args: &[&str]) -> (u16, String) {
    let out =
        host.command("curl").args(["-s", "-w", "\n%{http_code}", "--max-time", "10"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_string())
}

fn md(path: &str) -> String {
    format!("http://{METADATA_IP}{path}")
}

#[test]
fn a_node_reads_only_its_own_metadata_from_any_namespace_or_header() {
    let lab = Lab::new(2);
    let dir = lab.bed.path("keys");
    fs::write(&dir, format!("{KEY}\n")).unwrap();
    lab.cli(&["node", "metadata", "set", "pc0", "--ssh-keys", dir.to_str().unwrap()]);
    let (n0, n1) = (lab.node(0), lab.node(1));
    assert_eq!(curl(&n0, &[&md("/latest/meta-data/local-hostname")]), (200, "pc0".into()));
    assert_eq!(curl(&n1, &[&md("/latest/meta-data/local-hostname")]), (200, "pc1".into()));
    assert_eq!(curl(&n0, &[&md("/latest/meta-data/local-ipv4")]).1, n0.addr.to_string());
    assert_eq!(curl(&n0, &[&md("/2009-04-04/meta-data/placement/availability-zone")]).1, "lab-a");
    assert_eq!(curl(&n0, &[&md("/latest/meta-data/public-keys/0/openssh-key")]), (200, KEY.into()));
    assert_eq!(curl(&n1, &[&md("/latest/meta-data/public-keys/0/openssh-key")]).0, 404);
    assert_eq!(curl(&n0, &[&md("/latest/user-data")]).0, 404, "no user-data");
    // Forged headers and the other node's NoCloud prefix get pc1 nothing of pc0's.
    let forged =
        ["-H", "X-Forwarded-For: 10.99.0.10", "-H", "X-Real-IP: 10.99.0.10", "-H", "Forwarded: for=10.99.0.10"];
    let mut args: Vec<&str> = forged.to_vec();
    let hostname = md("/latest/meta-data/hostname");
    args.push(&hostname);
    assert_eq!(curl(&n1, &args), (200, "pc1".into()));
    assert_eq!(curl(&n1, &[&md("/nocloud/pc0/meta-data")]).0, 404);
    assert_eq!(curl(&n1, &[&md("/nocloud/pc0/vendor-data")]).0, 404);
    // The server's own namespace is no node at all.
    assert_eq!(curl(&lab.net.server, &[&md("/latest/meta-data/instance-id")]).0, 404);
    // IMDSv2: pc1's token does not work for pc0, a required token is enforced.
    let ttl = ["-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60"];
    let token_url = md("/latest/api/token");
    let (st, t1) = curl(&n1, &[ttl[0], ttl[1], ttl[2], ttl[3], &token_url]);
    assert_eq!(st, 200);
    let h1 = format!("X-aws-ec2-metadata-token: {t1}");
    assert_eq!(curl(&n0, &["-H", &h1, &hostname]).0, 401);
    assert_eq!(curl(&n1, &["-H", &h1, &hostname]), (200, "pc1".into()));
    assert_eq!(curl(&n0, &["-X", "PUT", &token_url]).0, 400, "no TTL");
    assert_eq!(curl(&n0, &[ttl[0], ttl[1], ttl[2], ttl[3], "-H", "X-Forwarded-For: 1.2.3.4", &token_url]).0, 403);
    lab.cli(&["node", "metadata", "set", "pc1", "--imdsv2", "required"]);
    assert_eq!(curl(&n1, &[&hostname]).0, 401);
    assert_eq!(curl(&n1, &["-H", &h1, &hostname]).1, "pc1");
    // Bad input through the CLI: binary and oversized user-data.
    let bin = lab.bed.path("ud.bin");
    fs::write(&bin, b"#!/bin/sh\n\xff\xfe\x00").unwrap();
    assert!(!lab.cli_out(&["node", "metadata", "set", "pc0", "--user-data", bin.to_str().unwrap()]).status.success());
    fs::write(&bin, format!("#!/bin/sh\n#{}\n", "x".repeat(17_000))).unwrap();
    let out = lab.cli_out(&["node", "metadata", "set", "pc0", "--user-data", bin.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A root for first boot and cloud-init: the host's /usr (bind-mounted
/// read-only inside a private mount namespace, never on the host), the
/// merged-/usr links, and a small /etc of its own.
fn throwaway_root(bed: &Bed) -> PathBuf {
    let root = bed.path("root");
    for d in ["usr", "etc/ssh", "root", "var/lib", "var/log", "var/tmp", "tmp", "run", "proc", "dev", "sys"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for l in ["bin", "sbin", "lib", "lib64"] {
        if Path::new("/").join(l).exists() {
            std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l)).unwrap();
        }
    }
    let w = |rel: &str, text: &str| fs::write(root.join(rel), text).unwrap();
    w("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    w("etc/group", "root:x:0:\nshadow:x:42:\nnogroup:x:65534:\n");
    w("etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n");
    w("etc/hostname", "template\n");
    w("etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n");
    w("etc/fstab", "# fstab\n");
    w("etc/ssh/ssh_host_ed25519_key", "THE TEMPLATE'S KEY\n");
    for f in ["os-release", "nsswitch.conf", "ld.so.cache"] {
        let _ = fs::copy(Path::new("/etc").join(f), root.join("etc").join(f));
    }
    root
}

/// `script` run by sh in `host`'s namespace, in a new mount and UTS
/// namespace where `root` has the host's /usr, /dev, /proc and /sys.
fn confined(host: &Host, root: &Path, script: &str) -> Output {
    let r = root.display();
    let setup = format!(
        "set -e; mount --make-rprivate /; mount --bind /usr {r}/usr; mount -o remount,bind,ro {r}/usr; \
         mount --rbind /dev {r}/dev; mount -t proc proc {r}/proc; mount -t sysfs sysfs {r}/sys; \
         mount -t tmpfs tmpfs {r}/run; set +e; {script}"
    );
    host.command("unshare").args(["--mount", "--uts", "--", "sh", "-c", &setup]).stdin(Stdio::null()).output().unwrap()
}

fn firstboot(host: &Host, root: &Path, url: &str, extra: &str) -> Output {
    let agent = agent_bin().display();
    confined(host, root, &format!("{agent} firstboot --root {} --url {url} {extra}", root.display()))
}

/// Whether `password` matches the crypt `hash` (glibc's, through Python).
fn crypt_matches(password: &str, hash: &str) -> bool {
    let out = Command::new("python3")
        .args(["-W", "ignore", "-c", "import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])"])
        .args([password, hash])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

fn root_hash(root: &Path) -> String {
    let shadow = fs::read_to_string(root.join("etc/shadow")).unwrap();
    shadow.lines().find(|l| l.starts_with("root:")).unwrap().split(':').nth(1).unwrap().to_string()
}

#[test]
fn firstboot_configures_a_root_once_per_instance() {
    let lab = Lab::new(1);
    let keys = lab.bed.path("keys");
    fs::write(&keys, format!("{KEY}\n")).unwrap();
    let ud = lab.bed.path("ud.sh");
    fs::write(&ud, "#!/bin/sh\necho \"ran as $(id -u)\" >> /var/tmp/user-data-ran\n").unwrap();
    lab.cli(&[
        "node",
        "metadata",
        "set",
        "pc0",
        "--ssh-keys",
        keys.to_str().unwrap(),
        "--user-data",
        ud.to_str().unwrap(),
    ]);
    lab.cli(&["node", "metadata", "set", "pc0", "--ephemeral-disk", "/dev/vdb", "--imdsv2", "required"]);
    let root = throwaway_root(&lab.bed);
    let n0 = lab.node(0);
    let out = firstboot(&n0, &root, &md(""), "");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert_eq!(fs::read_to_string(root.join("etc/hostname")).unwrap(), "pc0\n");
    assert!(fs::read_to_string(root.join("etc/hosts")).unwrap().contains("127.0.1.1\tpc0\n"));
    assert_eq!(fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(), format!("{KEY}\n"));
    let hash = root_hash(&root);
    assert!(crypt_matches(&lab.passwords[0], &hash), "{hash} is not the hash of the owner's password");
    assert!(!fs::read_to_string(root.join("etc/ssh/ssh_host_ed25519_key")).unwrap().contains("TEMPLATE"));
    assert!(root.join("etc/ssh/ssh_host_ed25519_key.pub").exists());
    assert!(fs::read_to_string(root.join("etc/fstab")).unwrap().contains("/dev/vdb\t/mnt"));
    let instance =
        curl(&n0, &["-H", &format!("X-aws-ec2-metadata-token: {}", "none"), &md("/latest/meta-data/instance-id")]);
    assert_eq!(instance.0, 401, "a made-up token is refused (and firstboot, which got through, used a real one)");
    assert!(fs::read_to_string(root.join("etc/image-id")).unwrap().contains("instance_id=i-"));
    assert_eq!(fs::read_to_string(root.join("var/tmp/user-data-ran")).unwrap(), "ran as 0\n");
    // A second run for the same instance changes nothing; the password
    // was handed out once.
    let out = firstboot(&n0, &root, &md(""), "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already configured"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(root.join("var/tmp/user-data-ran")).unwrap(), "ran as 0\n");
    let token = curl(&n0, &["-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", &md("/latest/api/token")]).1;
    let again = curl(&n0, &["-H", &format!("X-aws-ec2-metadata-token: {token}"), &md("/shoal/v1/initial-password")]);
    assert_eq!(again.0, 410, "a second fetch of the password is refused");
    // A new instance runs first boot again, with a new password.
    let v: serde_json::Value = serde_json::from_str(&lab.cli(&["--json", "node", "instance", "pc0"])).unwrap();
    let out = firstboot(&n0, &root, &md(""), "");
    assert!(out.status.success());
    assert_eq!(fs::read_to_string(root.join("var/tmp/user-data-ran")).unwrap(), "ran as 0\nran as 0\n");
    assert!(crypt_matches(v["initial_password"].as_str().unwrap(), &root_hash(&root)));
    assert!(!crypt_matches(&lab.passwords[0], &root_hash(&root)));
}

#[test]
fn firstboot_boots_on_when_the_metadata_service_is_down() {
    let lab = Lab::new(1);
    let root = throwaway_root(&lab.bed);
    // Nothing listens on port 9 of the server's address.
    let start = Instant::now();
    let out = firstboot(&lab.node(0), &root, "http://10.99.0.1:9", "--attempts 3 --retry-secs 1");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the node must boot anyway: {log}");
    assert!(log.contains("attempt 1 of 3") && log.contains("attempt 3 of 3"), "{log}");
    assert!(
        log.contains("giving up on the metadata service") && log.contains("booting without first-boot configuration")
    );
    assert!(start.elapsed() >= Duration::from_secs(2), "it waited between attempts");
    assert_eq!(fs::read_to_string(root.join("etc/hostname")).unwrap(), "template\n", "nothing changed");
    assert!(!root.join(shoal_agent_state()).exists());
}

fn shoal_agent_state() -> String {
    "var/lib/shoal/firstboot/instance-id".into()
}

/// cloud-init's configuration for the throwaway root: one data source,
/// no network configuration, keys for root.
fn cloud_cfg(root: &Path, datasource: &str) {
    let etc = root.join("etc/cloud");
    fs::create_dir_all(etc.join("cloud.cfg.d")).unwrap();
    fs::copy("/etc/cloud/cloud.cfg", etc.join("cloud.cfg")).unwrap();
    fs::write(
        etc.join("cloud.cfg.d/99-shoal-test.cfg"),
        format!(
            "{datasource}\nnetwork: {{config: disabled}}\ndisable_root: false\nusers: []\n\
             preserve_hostname: false\nmanage_etc_hosts: false\n"
        ),
    )
    .unwrap();
}

fn cloud_init(host: &Host, root: &Path) -> String {
    let r = root.display();
    let out = confined(
        host,
        root,
        &format!(
            "chroot {r} cloud-init init >/var/tmp/ci.log 2>&1 || true; cat /var/tmp/ci.log 2>/dev/null; \
             chroot {r} cloud-init modules --mode config; chroot {r} cloud-init modules --mode final; \
             echo; echo \"uts-hostname=$(hostname)\""
        ),
    );
    let log = fs::read_to_string(root.join("var/log/cloud-init.log")).unwrap_or_default();
    format!(
        "{}\n{}\n--- cloud-init.log ---\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cloud_init_lab() -> Lab {
    let lab = Lab::new(1);
    let keys = lab.bed.path("keys");
    fs::write(&keys, format!("{KEY}\n")).unwrap();
    let ud = lab.bed.path("ud.sh");
    fs::write(&ud, "#!/bin/sh\necho user-data-ran > /var/tmp/user-data-ran\n").unwrap();
    lab.cli(&[
        "node",
        "metadata",
        "set",
        "pc0",
        "--ssh-keys",
        keys.to_str().unwrap(),
        "--user-data",
        ud.to_str().unwrap(),
    ]);
    lab
}

fn check_cloud_init_result(root: &Path, log: &str) {
    assert!(log.contains("uts-hostname=pc0"), "{log}");
    assert_eq!(fs::read_to_string(root.join("etc/hostname")).unwrap().trim(), "pc0", "{log}");
    let ak = fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap_or_default();
    assert!(ak.lines().any(|l| l.trim() == KEY), "authorized_keys: {ak:?}\n{log}");
    assert_eq!(fs::read_to_string(root.join("var/tmp/user-data-ran")).unwrap_or_default(), "user-data-ran\n", "{log}");
}

#[test]
fn cloud_init_configures_a_node_from_the_ec2_endpoint() {
    let lab = cloud_init_lab();
    let root = throwaway_root(&lab.bed);
    cloud_cfg(
        &root,
        &format!(
            "datasource_list: [Ec2]\ndatasource:\n  Ec2:\n    metadata_urls: ['http://{METADATA_IP}']\n    \
             strict_id: false\n    timeout: 5\n    max_wait: 20"
        ),
    );
    let log = cloud_init(&lab.node(0), &root);
    check_cloud_init_result(&root, &log);
    let id = fs::read_to_string(root.join("var/lib/cloud/data/instance-id")).unwrap_or_default();
    assert!(id.starts_with("i-"), "{id:?}\n{log}");
}

#[test]
fn cloud_init_configures_a_node_from_the_nocloud_endpoint() {
    let lab = cloud_init_lab();
    let root = throwaway_root(&lab.bed);
    cloud_cfg(
        &root,
        &format!(
            "datasource_list: [NoCloud]\ndatasource:\n  NoCloud:\n    seedfrom: http://{METADATA_IP}/nocloud/pc0/"
        ),
    );
    let log = cloud_init(&lab.node(0), &root);
    check_cloud_init_result(&root, &log);
    // The vendor-data set root's initial password, and took it.
    assert!(crypt_matches(&lab.passwords[0], &root_hash(&root)), "shadow: {}\n{log}", root_hash(&root));
}
