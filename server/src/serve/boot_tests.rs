use super::*;
use crate::serve::nodes::NodeTable;

const NODES: &str = r#"
[[node]]
name = "pc1"
mac = "52:54:00:00:00:01"
ip = "10.0.0.21"
boot = "reload debian12"

[[node]]
name = "pc2"
mac = "52:54:00:00:00:02"
ip = "10.0.0.22"
boot = "menu"
images = ["debian12", "ubuntu24:2"]
menu_default = "ubuntu24:2"

[[node]]
name = "pc3"
mac = "52:54:00:00:00:03"
ip = "10.0.0.23"
boot = "local"
"#;

fn mac(n: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0, 0, n])
}

fn service(agent: bool, unknown: UnknownClients) -> BootService {
    let catalog = Arc::new(NodeTable::parse(NODES).expect("valid nodes"));
    let settings = BootSettings {
        base: Url::new("http://10.0.0.1:4870").expect("url"),
        agent,
        agent_args: vec![Word::new("console=ttyS0").expect("word")],
        unknown,
        retry: Retry::default(),
    };
    BootService::new(catalog, settings)
}

fn token_in(script: &str) -> String {
    let at = script.find("shoal.token=").expect("a token") + "shoal.token=".len();
    script[at..].split_whitespace().next().expect("token").to_owned()
}

#[test]
fn reload_node_gets_the_agent_with_a_fresh_recorded_token() {
    let boot = service(true, UnknownClients::Ignore);
    let first = boot.script(mac(1)).expect("script");
    assert!(first.contains("kernel --name shoal-kernel http://10.0.0.1:4870/boot/agent/kernel "), "{first}");
    let args = " BOOTIF=01-52-54-00-00-00-01 shoal.server=http://10.0.0.1:4870 shoal.node=pc1 shoal.task=load \
                shoal.image=debian12 shoal.target=/dev/sda shoal.token=";
    assert!(first.contains(args), "{first}");
    assert!(first.contains("initrd --name shoal-initrd http://10.0.0.1:4870/boot/agent/initrd "));
    let second = boot.script(mac(1)).expect("script");
    let (t1, t2) = (token_in(&first), token_in(&second));
    assert_ne!(t1, t2, "each rendering issues a new token");
    let pc1 = "pc1".parse().expect("name");
    assert!(boot.tokens().redeem(&pc1, &t1).is_none(), "the older token was replaced");
    assert_eq!(boot.tokens().redeem(&pc1, &t2).map(|i| i.action), Some("reload debian12".to_owned()));
}

#[test]
fn menu_node_gets_its_images_and_each_choice_loads_only_an_allowed_image() {
    let boot = service(true, UnknownClients::Ignore);
    let menu = boot.script(mac(2)).expect("script");
    assert!(menu.contains("item image0 debian12\nitem image1 ubuntu24:2\n"), "{menu}");
    assert!(menu.contains("--default image1 "));
    assert!(menu.contains("set shoal-url http://10.0.0.1:4870/boot/52:54:00:00:00:02/load/ubuntu24:2\n"));
    assert!(!menu.contains("shoal.token"), "a menu issues no token");
    let load = boot.load_script(mac(2), "ubuntu24:2").expect("allowed");
    assert!(load.contains("shoal.node=pc2 shoal.task=load shoal.image=ubuntu24:2 shoal.target=/dev/sda shoal.token="));
    assert!(matches!(boot.load_script(mac(2), "secret"), Err(BootError::NotAllowed { .. })));
    assert!(matches!(boot.load_script(mac(1), "debian12"), Err(BootError::NotAllowed { .. })));
    assert!(matches!(boot.load_script(mac(9), "debian12"), Err(BootError::UnknownMac(_))));
}

#[test]
fn local_node_still_boots_from_the_network_and_is_sent_to_its_disk() {
    let boot = service(false, UnknownClients::Ignore);
    let script = boot.script(mac(3)).expect("script");
    assert!(script.contains("sanboot --no-describe --drive 0x80"));
    let dhcp = boot.lookup(mac(3)).expect("registered");
    assert_eq!(
        dhcp,
        NodeBoot { ip: Some(Ipv4Addr::new(10, 0, 0, 23)), hostname: Some("pc3".into()), network_boot: true }
    );
    assert!(boot.is_reserved(Ipv4Addr::new(10, 0, 0, 21)));
}

#[test]
fn without_an_agent_only_agent_decisions_fail() {
    let boot = service(false, UnknownClients::Ignore);
    assert!(matches!(boot.script(mac(1)), Err(BootError::NoAgent(_))));
    assert!(matches!(boot.script(mac(2)), Err(BootError::NoAgent(_))));
    assert!(boot.script(mac(3)).is_ok());
}

#[test]
fn unknown_machines_get_nothing_or_an_empty_menu() {
    assert!(matches!(service(true, UnknownClients::Ignore).script(mac(9)), Err(BootError::UnknownMac(_))));
    let menu = service(true, UnknownClients::Menu).script(mac(9)).expect("menu");
    assert!(menu.contains("menu Shoal: unregistered machine 52:54:00:00:00:09\n"), "{menu}");
    assert!(menu.contains("set shoal-url http://10.0.0.1:4870/boot/52:54:00:00:00:09.ipxe\n"));
    assert!(service(true, UnknownClients::Menu).lookup(mac(9)).is_none());
}
