//! Kernel modules: which files to copy and in what order to load them,
//! from the kernel's `modules.dep` and `modules.builtin`.
//!
//! `modules.dep` has one line per module, `PATH: DEP DEP ...`, paths
//! relative to `/lib/modules/VERSION`. depmod lists the full closure of a
//! module's dependencies, the ones to load last first; we do not rely on
//! either property and resolve the graph ourselves (depth first, each
//! module after everything it depends on, cycles refused).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A module's name as the kernel knows it: the file name without `.ko`
/// and any compression suffix, with `-` folded to `_` (`nvme-core.ko` is
/// `nvme_core`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleName(String);

impl ModuleName {
    pub fn new(name: &str) -> ModuleName {
        ModuleName(name.replace('-', "_"))
    }

    /// The name of the module in the file at `path` (`kernel/x/nvme-core.ko.xz`).
    pub fn of_path(path: &str) -> Option<ModuleName> {
        let file = path.rsplit('/').next()?;
        let stem = file.split_once(".ko")?;
        if !matches!(stem.1, "" | ".xz" | ".zst" | ".gz") || stem.0.is_empty() {
            return None;
        }
        Some(ModuleName::new(stem.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why `modules.dep` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DepError {
    /// a line that is not `PATH: DEPS`
    #[error("modules.dep line {line}: not `path: deps`")]
    Syntax { line: usize },
    /// a path that is not a kernel module file
    #[error("modules.dep line {line}: {path} is not a module file")]
    NotModule { line: usize, path: String },
    /// a module depends on one modules.dep does not list
    #[error("{module} depends on {missing}, which modules.dep does not list")]
    Missing { module: ModuleName, missing: String },
    /// the dependency graph has a cycle
    #[error("dependency cycle through {0}")]
    Cycle(ModuleName),
}

/// The parsed `modules.dep`.
#[derive(Debug, Default)]
pub struct ModuleDeps {
    /// Module name → its path and the paths it depends on.
    by_name: BTreeMap<ModuleName, (String, Vec<String>)>,
    by_path: BTreeMap<String, ModuleName>,
}

impl ModuleDeps {
    pub fn parse(text: &str) -> Result<ModuleDeps, DepError> {
        let mut deps = ModuleDeps::default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, rest) = line.split_once(':').ok_or(DepError::Syntax { line: line_no })?;
            let path = path.trim();
            let name =
                ModuleName::of_path(path).ok_or_else(|| DepError::NotModule { line: line_no, path: path.into() })?;
            let list: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            deps.by_path.insert(path.to_string(), name.clone());
            deps.by_name.insert(name, (path.to_string(), list));
        }
        Ok(deps)
    }

    /// The file of module `name`, relative to the modules directory.
    pub fn path(&self, name: &ModuleName) -> Option<&str> {
        self.by_name.get(name).map(|(p, _)| p.as_str())
    }

    /// The files to load for `wanted`, each after its dependencies, each
    /// once. Modules modules.dep does not list are returned apart (they are
    /// built in, or this kernel does not have them).
    pub fn resolve<'a>(
        &self,
        wanted: impl IntoIterator<Item = &'a ModuleName>,
    ) -> Result<(Vec<String>, Vec<ModuleName>), DepError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in wanted {
            if self.by_name.contains_key(name) {
                self.visit(name, &mut Vec::new(), &mut done, &mut order)?;
            } else if !unknown.contains(name) {
                unknown.push(name.clone());
            }
        }
        Ok((order, unknown))
    }

    fn visit(
        &self,
        name: &ModuleName,
        stack: &mut Vec<ModuleName>,
        done: &mut BTreeSet<ModuleName>,
        order: &mut Vec<String>,
    ) -> Result<(), DepError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.contains(name) {
            return Err(DepError::Cycle(name.clone()));
        }
        let Some((path, list)) = self.by_name.get(name) else {
            return Ok(());
        };
        stack.push(name.clone());
        // depmod lists the modules to load last first: walk the list from
        // its end so the order matches modprobe's where both are valid.
        for dep in list.iter().rev() {
            let dep_name = self
                .by_path
                .get(dep)
                .ok_or_else(|| DepError::Missing { module: name.clone(), missing: dep.clone() })?
                .clone();
            self.visit(&dep_name, stack, done, order)?;
        }
        stack.pop();
        done.insert(name.clone());
        order.push(path.clone());
        Ok(())
    }
}

/// The module names in `modules.builtin` (one path a line).
pub fn builtin(text: &str) -> BTreeSet<ModuleName> {
    text.lines().filter_map(|l| ModuleName::of_path(l.trim())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/nvme/host/nvme-core.ko.zst:
";

    fn names(v: &[&str]) -> Vec<ModuleName> {
        v.iter().map(|n| ModuleName::new(n)).collect()
    }

    #[test]
    fn dependencies_load_first_and_each_module_once() {
        let deps = ModuleDeps::parse(DEP).unwrap();
        let (order, unknown) = deps.resolve(&names(&["virtio_net", "virtio_blk"])).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/block/virtio_blk.ko.xz",
            ]
        );
        assert!(unknown.is_empty());
    }

    #[test]
    fn transitive_dependencies_are_found_even_when_depmod_lists_only_direct_ones() {
        let deps = ModuleDeps::parse("a.ko: b.ko\nb.ko: c.ko\nc.ko:\n").unwrap();
        let (order, _) = deps.resolve(&names(&["a"])).unwrap();
        assert_eq!(order, ["c.ko", "b.ko", "a.ko"]);
    }

    #[test]
    fn dashes_and_compression_suffixes_do_not_change_the_name() {
        let deps = ModuleDeps::parse(DEP).unwrap();
        assert_eq!(deps.path(&ModuleName::new("nvme_core")), Some("kernel/drivers/nvme/host/nvme-core.ko.zst"));
        assert_eq!(deps.path(&ModuleName::new("nvme-core")), Some("kernel/drivers/nvme/host/nvme-core.ko.zst"));
        assert_eq!(ModuleName::of_path("x/a.ko.bz2"), None);
        assert_eq!(ModuleName::of_path("x/.ko"), None);
    }

    #[test]
    fn modules_the_kernel_lacks_are_reported_not_fatal() {
        let deps = ModuleDeps::parse(DEP).unwrap();
        let (order, unknown) = deps.resolve(&names(&["e1000e", "virtio_ring", "e1000e"])).unwrap();
        assert_eq!(order, ["kernel/drivers/virtio/virtio_ring.ko"]);
        assert_eq!(unknown, names(&["e1000e"]));
    }

    #[test]
    fn a_cycle_or_a_dangling_dependency_is_an_error() {
        let deps = ModuleDeps::parse("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        assert!(matches!(deps.resolve(&names(&["a"])), Err(DepError::Cycle(_))));
        let deps = ModuleDeps::parse("a.ko: gone.ko\n").unwrap();
        assert!(matches!(deps.resolve(&names(&["a"])), Err(DepError::Missing { .. })));
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(ModuleDeps::parse("a.ko b.ko\n").unwrap_err(), DepError::Syntax { line: 1 });
        assert!(matches!(ModuleDeps::parse("README: a.ko\n"), Err(DepError::NotModule { line: 1, .. })));
    }

    #[test]
    fn builtin_modules_are_named_like_loadable_ones() {
        let b = builtin("kernel/drivers/nvme/host/nvme-core.ko\nkernel/net/packet/af_packet.ko\n");
        assert!(b.contains(&ModuleName::new("nvme_core")));
        assert!(b.contains(&ModuleName::new("af_packet")));
    }
}
