//! The namespace test bed itself: multicast crosses the bridge, injected
//! loss and blocking take effect, and nothing is left behind.

use std::process::Command;

use shoal_tests::netbed::NetBed;
use shoal_tests::sh;

/// Sends `count` multicast datagrams from one host, paced so a busy
/// receiver keeps up, and counts what another receives, with Debian's
/// python3.
fn multicast(bed: &mut NetBed, from: usize, to: usize, count: u32) -> u32 {
    let rx = bed.nodes[to].clone();
    let tx = bed.nodes[from].clone();
    let out = bed.nodes[to].addr;
    let recv = format!(
        "import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,4<<20)\ns.bind(('239.77.0.1',47000))\ns.setsockopt(socket.IPPROTO_IP,socket.IP_ADD_MEMBERSHIP,struct.pack('4s4s',socket.inet_aton('239.77.0.1'),socket.inet_aton('{out}')))\ns.settimeout(2)\nn=0\ntry:\n  while True:\n    s.recv(2000); n+=1\nexcept socket.timeout: pass\nprint(n)\n"
    );
    let child =
        rx.command("/usr/bin/python3").args(["-c", &recv]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let send = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,1)\nimport time\nfor i in range({count}):\n  s.sendto(b'x'*1000,('239.77.0.1',47000)); time.sleep(0.001)\n"
    );
    sh(tx.command("/usr/bin/python3").args(["-c", &send]));
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn multicast_crosses_the_bed_and_faults_take_effect() {
    let mut bed = NetBed::new(2);
    assert_eq!(multicast(&mut bed, 0, 1, 200), 200);
    bed.nodes[1].udp_loss(50);
    let got = multicast(&mut bed, 0, 1, 400);
    assert!((100..300).contains(&got), "50% loss let {got} of 400 through");
    bed.nodes[1].heal();
    bed.nodes[1].block_multicast();
    assert_eq!(multicast(&mut bed, 0, 1, 50), 0);
    let names: Vec<String> =
        std::iter::once(bed.server.ns.clone()).chain(bed.nodes.iter().map(|n| n.ns.clone())).collect();
    drop(bed);
    let left =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    for n in names {
        assert!(!left.contains(&n), "{n} left behind");
    }
}
