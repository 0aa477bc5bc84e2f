//! The CLI side of the control plane: the bootstrap commands that work
//! on the catalog file directly (`shoal project create`, `shoal token
//! create`), and the commands that are clients of the HTTP API (`shoal
//! node ...`, `shoal job ...`, `shoal status`, `shoal image create`,
//! `snapshot`, `share`, `unshare`, and `delete` when --url is set). Each
//! prints text, or the server's JSON with --json; [`watch`] follows a job.

pub mod args;
pub mod http;
pub mod watch;

use anyhow::Context;
use serde_json::{json, Value};

use crate::catalog::{Catalog, PowerDriver};
use crate::cli::{Cli, Command};
use args::{
    BootChoice, CreateArgs, Imdsv2, JobCommand, MetadataCommand, NodeCommand, ProjectCommand, ShareArgs, SnapshotArgs,
    TokenCommand,
};
use http::Client;

/// Runs a control-plane command.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Project(ProjectCommand::Create { name }) => {
            let cat = open_catalog(cli)?;
            cat.create_project(name)?;
            done(cli, json!({"project": name}), format!("project {name} created"));
        }
        Command::Token(TokenCommand::Create { project, user, admin }) => {
            let cat = open_catalog(cli)?;
            let secret = cat.create_token(project, user.as_ref(), *admin)?;
            // The token alone on stdout, so `$(shoal token create ...)` works.
            done(cli, json!({"project": project, "admin": admin, "token": secret.expose()}), secret.expose().into());
        }
        Command::Node(cmd) => node(cli, &client(cli)?, cmd)?,
        Command::Job(cmd) => job(cli, &client(cli)?, cmd)?,
        Command::Status => {
            let s = client(cli)?.get("/v1/status")?;
            let counts = |v: &Value| {
                v.as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(_, n)| n.as_u64() != Some(0))
                            .map(|(k, n)| format!("{n} {k}"))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .join(", ")
            };
            let text = format!(
                "project {}: {} images\nnodes: {}\njobs: {}",
                s["project"].as_str().unwrap_or("?"),
                s["images"],
                or_none(counts(&s["nodes"])),
                or_none(counts(&s["jobs"]))
            );
            done(cli, s, text);
        }
        _ => anyhow::bail!("internal error: not a control-plane command"),
    }
    Ok(())
}

/// `shoal image delete` through the API.
pub fn image_delete(cli: &Cli, image: &str) -> anyhow::Result<()> {
    let v = client(cli)?.delete(&format!("/v1/images/{}", enc(image)))?;
    let text =
        format!("deleted {}:{} ({}) from the server", str_of(&v["name"]), str_of(&v["version"]), str_of(&v["id"]));
    done(cli, v, text);
    Ok(())
}

/// `shoal image create --from-node NODE NAME`: a capture job.
pub fn image_create(cli: &Cli, a: &CreateArgs) -> anyhow::Result<()> {
    let c = client(cli)?;
    let mut body = json!({"name": a.name, "node": a.from_node, "description": a.description});
    if let Some(v) = &a.version {
        body["version"] = json!(v);
    }
    if let Some(b) = &a.base {
        body["base"] = json!(b);
    }
    let v = c.post("/v1/images", body)?;
    created(cli, &c, v, a.watch)
}

/// `shoal image snapshot NODE IMAGE`: a capture job for a new version.
pub fn image_snapshot(cli: &Cli, a: &SnapshotArgs) -> anyhow::Result<()> {
    let c = client(cli)?;
    let v = c.post(&format!("/v1/images/{}/update", enc(&a.image)), json!({"node": a.node}))?;
    created(cli, &c, v, a.watch)
}

/// Prints a new job, then follows it if asked.
fn created(cli: &Cli, c: &Client, v: Value, follow: bool) -> anyhow::Result<()> {
    created_with(cli, c, v, follow, "")
}

/// [`created`], with more lines for people after the job's.
fn created_with(cli: &Cli, c: &Client, v: Value, follow: bool, more: &str) -> anyhow::Result<()> {
    let id = v["id"].as_i64();
    let text = job_created(&v) + more;
    done(cli, v, text);
    match (follow, id) {
        (true, Some(id)) => watch::watch(cli, c, id, std::time::Duration::from_secs(2)),
        _ => Ok(()),
    }
}

/// `shoal image share` / `unshare`.
pub fn image_share(cli: &Cli, a: &ShareArgs, share: bool) -> anyhow::Result<()> {
    let verb = if share { "share" } else { "unshare" };
    let body = match &a.project {
        Some(p) => json!({"project": p}),
        None => json!({"public": a.public}),
    };
    let v = client(cli)?.post(&format!("/v1/images/{}/{verb}", enc(&a.image)), body)?;
    let shared: Vec<&str> =
        v["shared_with"].as_array().map_or(Vec::new(), |l| l.iter().filter_map(Value::as_str).collect());
    let text = format!(
        "{}:{} is {}{}",
        str_of(&v["name"]),
        str_of(&v["version"]),
        str_of(&v["visibility"]),
        if shared.is_empty() { String::new() } else { format!(" (shared with {})", shared.join(", ")) }
    );
    done(cli, v, text);
    Ok(())
}

fn node(cli: &Cli, c: &Client, cmd: &NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Register { name, mac, node_type, power, power_address, project, ip, disk } => {
            let driver: PowerDriver = (*power).into();
            let mut body = json!({"name": name, "mac": mac, "node_type": node_type,
                                  "power": {"driver": driver, "address": power_address}, "disk": disk});
            if let Some(ip) = ip {
                body["ip"] = json!(ip);
            }
            if let Some(p) = project {
                body["project"] = json!(p);
            }
            let v = c.post("/v1/nodes", body)?;
            let text = format!("node {} ({}) registered in project {}", name, str_of(&v["mac"]), str_of(&v["project"]));
            done(cli, v, text);
        }
        NodeCommand::List => {
            let v = c.get("/v1/nodes")?;
            let mut text =
                format!("{:<16} {:<17} {:<10} {:<9} {:<6} {:<5} IMAGE", "NAME", "MAC", "TYPE", "STATE", "BOOT", "JOB");
            for n in v.as_array().into_iter().flatten() {
                text += &format!(
                    "\n{:<16} {:<17} {:<10} {:<9} {:<6} {:<5} {}",
                    str_of(&n["name"]),
                    str_of(&n["mac"]),
                    str_of(&n["node_type"]),
                    str_of(&n["state"]),
                    str_of(&n["boot"]),
                    n["job"].as_i64().map_or("-".into(), |j| j.to_string()),
                    n["current_image"].as_str().map_or("-", |s| &s[..s.len().min(16)])
                );
            }
            done(cli, v, text);
        }
        NodeCommand::Show { name } => {
            let v = c.get(&format!("/v1/nodes/{name}"))?;
            let text = serde_json::to_string_pretty(&v)?;
            done(cli, v, text);
        }
        NodeCommand::Reload { nodes, image, first_boot, no_first_boot, watch } => {
            let mut body = json!({"kind": "reload", "nodes": nodes});
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if *first_boot || *no_first_boot {
                body["first_boot"] = json!(*first_boot && !*no_first_boot);
            }
            let v = c.post("/v1/jobs", body)?;
            let mut passwords = String::new();
            for i in v["instances"].as_array().into_iter().flatten() {
                passwords += &format!(
                    "\ninitial password of {} (instance {}, shown only now): {}",
                    str_of(&i["node"]),
                    str_of(&i["instance_id"]),
                    str_of(&i["initial_password"])
                );
            }
            created_with(cli, c, v, *watch, &passwords)?;
        }
        NodeCommand::Metadata(m) => metadata(cli, c, m)?,
        NodeCommand::Instance { name } => {
            let v = c.post(&format!("/v1/nodes/{name}/instance"), json!({}))?;
            let text = format!(
                "node {name}: instance {}\ninitial password (shown only now): {}",
                str_of(&v["instance_id"]),
                str_of(&v["initial_password"])
            );
            done(cli, v, text);
        }
        NodeCommand::Wipe { nodes } => {
            let v = c.post("/v1/jobs", json!({"kind": "wipe", "nodes": nodes}))?;
            created(cli, c, v, false)?;
        }
        NodeCommand::Boot { name, boot } => {
            let b = match boot {
                BootChoice::Local => "local",
                BootChoice::Menu => "menu",
            };
            let v = c.put(&format!("/v1/nodes/{name}/boot"), json!({"boot": b}))?;
            let text = format!("node {name}: next boot {}", str_of(&v["boot"]));
            done(cli, v, text);
        }
    }
    Ok(())
}

fn metadata(cli: &Cli, c: &Client, cmd: &MetadataCommand) -> anyhow::Result<()> {
    let (name, v) = match cmd {
        MetadataCommand::Show { name } => (name, c.get(&format!("/v1/nodes/{name}/metadata"))?),
        MetadataCommand::Set {
            name,
            ssh_keys,
            no_ssh_keys,
            user_data,
            no_user_data,
            ephemeral_disk,
            no_ephemeral_disk,
            imdsv2,
        } => {
            let mut body = json!({});
            if *no_ssh_keys {
                body["ssh_keys"] = json!([]);
            } else if !ssh_keys.is_empty() {
                let mut keys = Vec::new();
                for f in ssh_keys {
                    let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
                    keys.extend(
                        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from),
                    );
                }
                body["ssh_keys"] = json!(keys);
            }
            if *no_user_data {
                body["user_data"] = Value::Null;
            } else if let Some(f) = user_data {
                let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("{}: user-data must be UTF-8 text", f.display()))?;
                body["user_data"] = json!(text);
            }
            if *no_ephemeral_disk {
                body["ephemeral_disk"] = Value::Null;
            } else if let Some(d) = ephemeral_disk {
                body["ephemeral_disk"] = json!(d);
            }
            if let Some(i) = imdsv2 {
                body["imdsv2_required"] = json!(matches!(i, Imdsv2::Required));
            }
            (name, c.patch(&format!("/v1/nodes/{name}/metadata"), body)?)
        }
    };
    let keys = v["ssh_keys"].as_array().map_or(0, Vec::len);
    let text = format!(
        "node {name}: {keys} ssh keys, user-data {}, ephemeral disk {}, IMDSv2 token {}",
        v["user_data"].as_str().map_or("none".into(), |u| format!("{} bytes", u.len())),
        v["ephemeral_disk"].as_str().unwrap_or("none"),
        if v["imdsv2_required"].as_bool() == Some(true) { "required" } else { "optional" }
    );
    done(cli, v, text);
    Ok(())
}

fn job(cli: &Cli, c: &Client, cmd: &JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Show { id } => {
            let v = c.get(&format!("/v1/jobs/{id}"))?;
            let mut text = format!(
                "job {} {} ({}), project {}, image {}",
                v["id"],
                str_of(&v["kind"]),
                str_of(&v["state"]),
                str_of(&v["project"]),
                v["image"].as_str().unwrap_or("-")
            );
            for n in v["nodes"].as_array().into_iter().flatten() {
                text += &format!("\n  {:<16} {:<10} {:>3}%", str_of(&n["node"]), str_of(&n["state"]), n["progress"]);
            }
            text += "\nhistory:";
            for e in v["history"].as_array().into_iter().flatten() {
                text += &format!(
                    "\n  {} {:<10} {:<10} {}",
                    e["at"],
                    e["node"].as_str().unwrap_or("-"),
                    str_of(&e["state"]),
                    str_of(&e["message"])
                );
            }
            done(cli, v, text);
        }
        JobCommand::List => {
            let v = c.get("/v1/jobs")?;
            let mut text = format!("{:<6} {:<8} {:<10} NODES", "ID", "KIND", "STATE");
            for j in v.as_array().into_iter().flatten() {
                let nodes: Vec<&str> =
                    j["nodes"].as_array().into_iter().flatten().filter_map(|n| n["node"].as_str()).collect();
                text += &format!(
                    "\n{:<6} {:<8} {:<10} {}",
                    j["id"],
                    str_of(&j["kind"]),
                    str_of(&j["state"]),
                    nodes.join(" ")
                );
            }
            done(cli, v, text);
        }
        JobCommand::Watch { id, every } => watch::watch(cli, c, *id, std::time::Duration::from_secs(*every))?,
        JobCommand::Cancel { id } => {
            let v = c.post(&format!("/v1/jobs/{id}/cancel"), json!({}))?;
            let text = format!("job {id} {}", str_of(&v["state"]));
            done(cli, v, text);
        }
    }
    Ok(())
}

fn job_created(v: &Value) -> String {
    let nodes: Vec<&str> = v["nodes"].as_array().into_iter().flatten().filter_map(|n| n["node"].as_str()).collect();
    let image = match (v["params"]["name"].as_str(), v["params"]["version"].as_str()) {
        (Some(n), Some(ver)) => format!(" with {n}:{ver}"),
        _ => String::new(),
    };
    format!(
        "job {}: {} of {}{image} ({}); follow it with `shoal job watch {}`",
        v["id"],
        str_of(&v["kind"]),
        nodes.join(", "),
        str_of(&v["state"]),
        v["id"]
    )
}

fn client(cli: &Cli) -> Result<Client, http::ClientError> {
    Client::new(cli.url.as_deref(), cli.token.as_deref())
}

fn open_catalog(cli: &Cli) -> anyhow::Result<Catalog> {
    std::fs::create_dir_all(&cli.data_dir).with_context(|| format!("creating {}", cli.data_dir.display()))?;
    Catalog::open_in(&cli.data_dir).with_context(|| format!("opening the catalog in {}", cli.data_dir.display()))
}

fn done(cli: &Cli, v: Value, text: String) {
    if cli.json {
        println!("{v}");
    } else {
        println!("{text}");
    }
}

pub(crate) fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}

/// Percent-encodes an image reference for a URL path (`:` and the rest
/// of the name grammar pass unchanged).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
