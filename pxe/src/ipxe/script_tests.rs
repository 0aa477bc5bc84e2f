use std::collections::BTreeSet;

use super::*;

const MAC: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

fn word(s: &str) -> Word {
    Word::new(s).expect("valid word")
}

fn url(s: &str) -> Url {
    Url::new(s).expect("valid url")
}

fn agent(action: AgentAction) -> Agent {
    Agent::new(
        action,
        AgentBoot {
            node: &word("pc1"),
            mac: MAC,
            server: &url("http://10.0.0.1:4870"),
            token: &word("0123abcd"),
            target: &word("/dev/sda"),
            kernel: url("http://10.0.0.1:4870/boot/agent/kernel"),
            initrd: url("http://10.0.0.1:4870/boot/agent/initrd"),
            args: &[word("console=ttyS0,115200")],
        },
    )
    .expect("short command line")
}

fn menu(entries: &[&str], default: MenuDefault) -> Menu {
    Menu {
        node: Some(word("pc1")),
        mac: MAC,
        entries: entries
            .iter()
            .map(|e| MenuEntry { image: word(e), url: url(&format!("http://10.0.0.1:4870/boot/m/load/{e}")) })
            .collect(),
        default,
        timeout_secs: 10,
        again: url("http://10.0.0.1:4870/boot/52:54:00:12:34:56.ipxe"),
    }
}

/// Every command the renderer may emit.
const COMMANDS: &[&str] = &[
    "echo", "clear", "imgfree", "kernel", "initrd", "boot", "inc", "iseq", "sleep", "goto", "reboot", "sanboot",
    "exit", "menu", "item", "choose", "set", "chain",
];

/// Checks a script the way iPXE reads it: every line is a comment, a
/// label, or commands joined by `||`/`&&` whose names are known; `${...}`
/// names only our own settings and `platform`; labels jumped to exist.
fn lint(script: &str) {
    let mut lines = script.lines();
    assert_eq!(lines.next(), Some("#!ipxe"));
    let labels: BTreeSet<&str> = script.lines().filter_map(|l| l.strip_prefix(':')).collect();
    for line in lines {
        if line.starts_with('#') || line.starts_with(':') {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for cmd in tokens.split(|t| matches!(*t, "||" | "&&" | ";")) {
            let Some(name) = cmd.first() else { continue };
            assert!(COMMANDS.contains(name), "unknown command {name:?} in {line:?}");
            if *name == "goto" && cmd[1] != "${shoal-choice}" {
                assert!(labels.contains(cmd[1]), "no label {:?}", cmd[1]);
            }
            for t in cmd {
                assert!(!t.starts_with('#'), "comment token in {line:?}");
                let mut rest = *t;
                while let Some(at) = rest.find("${") {
                    let end = rest[at..].find('}').expect("closed expansion") + at;
                    let setting = &rest[at + 2..end];
                    assert!(["platform", "shoal-tries", "shoal-choice", "shoal-url"].contains(&setting), "{setting}");
                    rest = &rest[end..];
                }
            }
        }
    }
}

#[test]
fn agent_script_boots_kernel_and_initrd_with_the_node_token_on_the_command_line() {
    let text = Script::Agent(agent(AgentAction::Reload(word("debian12")))).render(Retry::default());
    lint(&text);
    assert!(text.contains(
        "kernel --name shoal-kernel http://10.0.0.1:4870/boot/agent/kernel initrd=shoal-initrd \
         console=ttyS0,115200 BOOTIF=01-52-54-00-12-34-56 shoal.server=http://10.0.0.1:4870 shoal.node=pc1 \
         shoal.task=load shoal.image=debian12 shoal.target=/dev/sda shoal.token=0123abcd || goto retry\n"
    ));
    assert!(text.contains("initrd --name shoal-initrd http://10.0.0.1:4870/boot/agent/initrd || goto retry\n"));
    assert!(text.contains("boot || goto retry\n"));
}

#[test]
fn agent_actions_reach_the_command_line() {
    let capture = agent(AgentAction::Capture(word("gold")));
    assert!(capture
        .cmdline()
        .ends_with("shoal.task=capture shoal.image=gold shoal.target=/dev/sda shoal.token=0123abcd"));
    let wipe = agent(AgentAction::Wipe);
    assert!(wipe.cmdline().ends_with("shoal.node=pc1 shoal.task=wipe shoal.target=/dev/sda shoal.token=0123abcd"));
    lint(&Script::Agent(wipe).render(Retry::default()));
}

#[test]
fn every_download_retries_a_bounded_number_of_times_then_reboots() {
    let retry = Retry { attempts: 3, delay_secs: 7 };
    for text in [
        Script::Agent(agent(AgentAction::Wipe)).render(retry),
        Script::Menu(menu(&["a", "b"], MenuDefault::Local)).render(retry),
    ] {
        for line in text.lines().filter(|l| ["kernel ", "initrd ", "chain ", "boot "].iter().any(|c| l.starts_with(c)))
        {
            assert!(line.contains("|| goto "), "download without retry: {line}");
        }
        assert!(text.contains("iseq ${shoal-tries} 3 && goto"), "{text}");
        assert!(text.contains("sleep 7\n"));
        assert!(text.contains("reboot\n"));
        assert!(text.contains("clear shoal-tries\n"));
    }
}

#[test]
fn local_script_uses_sanboot_on_bios_and_exit_on_uefi() {
    let text = Script::Local { node: Some(word("pc1")), mac: MAC }.render(Retry::default());
    lint(&text);
    assert!(text.contains("iseq ${platform} efi && exit 1 ||\nsanboot --no-describe --drive 0x80 ||\nexit 1\n"));
}

#[test]
fn menu_lists_images_with_a_timeout_and_a_default() {
    let text = Script::Menu(menu(&["debian12", "ubuntu24"], MenuDefault::Entry(1))).render(Retry::default());
    lint(&text);
    assert!(text.contains("item image0 debian12\nitem image1 ubuntu24\n"));
    assert!(text.contains("choose --timeout 10000 --default image1 shoal-choice || goto local\n"));
    assert!(text
        .contains(":image1\necho Shoal: loading ubuntu24\nset shoal-url http://10.0.0.1:4870/boot/m/load/ubuntu24\n"));
    assert!(text.contains("set shoal-url http://10.0.0.1:4870/boot/52:54:00:12:34:56.ipxe\n"));
    assert!(text.contains("chain --replace --autofree ${shoal-url} || goto chain-retry\n"));
    // Out of range or none: the local disk, never an accidental reload.
    let text = Script::Menu(menu(&["debian12"], MenuDefault::Entry(5))).render(Retry::default());
    assert!(text.contains("--default local "));
}

#[test]
fn unregistered_machines_get_a_menu_without_images() {
    let mut m = menu(&[], MenuDefault::Entry(0));
    m.node = None;
    let text = Script::Menu(m).render(Retry::default());
    lint(&text);
    assert!(text.contains("menu Shoal: unregistered machine 52:54:00:12:34:56\n"));
    assert!(text.contains("No images may be loaded"));
    assert!(text.contains("--default local "));
}

#[test]
fn command_line_longer_than_linux_takes_is_refused() {
    let args: Vec<Word> = (0..10).map(|i| word(&format!("x{i}={}", "y".repeat(250)))).collect();
    let got = Agent::new(
        AgentAction::Wipe,
        AgentBoot {
            node: &word("pc1"),
            mac: MAC,
            server: &url("http://s"),
            token: &word("t"),
            target: &word("/dev/sda"),
            kernel: url("http://s/k"),
            initrd: url("http://s/i"),
            args: &args,
        },
    );
    assert!(matches!(got, Err(ScriptError::CommandLine(n)) if n > MAX_CMDLINE), "{got:?}");
}
