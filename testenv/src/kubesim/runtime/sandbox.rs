//! The bubblewrap command line of one container (pure), and the host facts it is
//! built from.
//!
//! The sandbox has its own mount, PID, IPC and UTS namespaces and shares the host's
//! network namespace. Its root is a tmpfs with the host's `/usr` (and the `/bin`,
//! `/lib*` links), `/etc` entry by entry, `/proc`, `/dev`, `/tmp`, the pod's volumes
//! and kubesim's files under `/kubesim`; with `readOnlyRootFilesystem` the tmpfs is
//! remounted read-only after setup. bwrap's own PID 1 stays in place (no
//! `--as-pid-1`), so when bwrap dies, PID 1 dies and the kernel kills the whole
//! namespace: a container can never outlive kubesim. The user is switched inside
//! the sandbox by util-linux `setpriv` (real uid/gid, see [`Sandbox::user`]).

use std::path::{Path, PathBuf};

use super::image::SANDBOX_BIN_DIR;

/// Where the bind shim appears in the sandbox.
pub const SHIM_PATH: &str = "/kubesim/lib/kubesim-net.so";

/// A top-level entry of the host's root that the sandbox reproduces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostEntry {
    /// A symbolic link with this target (`/lib -> usr/lib` on merged-/usr systems).
    Symlink(String),
    /// A directory or file, bound read-only.
    Bind,
}

/// One volume mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host directory.
    pub source: PathBuf,
    /// `mountPath`.
    pub target: String,
    /// `readOnly`.
    pub read_only: bool,
}

/// Everything one sandboxed process is made of.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// UTS hostname (the pod name).
    pub hostname: String,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// Top-level host entries besides `/usr` (`bin`, `lib`, `lib64`, `sbin`...).
    pub root_entries: Vec<(String, HostEntry)>,
    /// Entries of the host's `/etc`.
    pub etc_entries: Vec<(String, HostEntry)>,
    /// The pod's hosts file (Service names), bound at `/etc/hosts`.
    pub hosts: PathBuf,
    /// The LD_PRELOAD shim that moves wildcard and loopback binds to the pod IP.
    pub shim: PathBuf,
    /// The mapped entrypoint binary, bound at `/kubesim/bin/<file name>`.
    pub binary: Option<PathBuf>,
    /// Volume mounts.
    pub mounts: Vec<Mount>,
    /// `(uid, gid, supplementary groups)` when the pod or container sets
    /// `runAsUser`/`runAsGroup`/`fsGroup`/`supplementalGroups`. Switched with
    /// `setpriv --reuid --regid --groups`, so the process really runs as that uid
    /// (files it writes to an emptyDir belong to it on the host too), unlike
    /// bwrap's `--uid`, which only maps ids in a user namespace.
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// `allowPrivilegeEscalation: false`: `setpriv --no-new-privs`.
    pub no_new_privs: bool,
    /// `workingDir`.
    pub workdir: Option<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// The command line.
    pub argv: Vec<String>,
}

impl Sandbox {
    /// The arguments of `bwrap` (without the program name). `info_fd` is the
    /// descriptor bwrap writes its child's pid to.
    pub fn bwrap_args(&self, info_fd: Option<i32>) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&[
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            &self.hostname,
        ]);
        if let Some(fd) = info_fd {
            push(&["--info-fd", &fd.to_string()]);
        }
        push(&["--ro-bind", "/usr", "/usr"]);
        for (name, entry) in &self.root_entries {
            host_entry(&mut a, "/", name, entry);
        }
        a.extend(["--dir".into(), "/etc".into()]);
        for (name, entry) in &self.etc_entries {
            if name != "hosts" && name != "hostname" {
                host_entry(&mut a, "/etc/", name, entry);
            }
        }
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["--ro-bind", &path(&self.hosts), "/etc/hosts"]);
        push(&["--proc", "/proc", "--dev", "/dev"]);
        push(&["--perms", "1777", "--dir", "/tmp"]);
        push(&["--dir", "/run", "--dir", "/var"]);
        // Parents before children, so a mount inside another volume lands on top.
        let mut mounts = self.mounts.clone();
        mounts.sort_by_key(|m| m.target.matches('/').count());
        // bwrap creates missing parents of a mount point with mode 0700, which a
        // non-root user could not pass: create them 0755 first.
        let mut targets = vec![SHIM_PATH.to_string(), format!("{SANDBOX_BIN_DIR}/x")];
        targets.extend(mounts.iter().map(|m| m.target.clone()));
        for dir in self.parents(&targets) {
            push(&["--perms", "0755", "--dir", &dir]);
        }
        push(&["--ro-bind", &path(&self.shim), SHIM_PATH]);
        if let Some(binary) = &self.binary
            && let Some(name) = binary.file_name()
        {
            let target = format!("{SANDBOX_BIN_DIR}/{}", name.to_string_lossy());
            push(&["--ro-bind", &path(binary), &target]);
        }
        for m in &mounts {
            let kind = if m.read_only { "--ro-bind" } else { "--bind" };
            push(&[kind, &path(&m.source), &m.target]);
        }
        if self.read_only_root {
            push(&["--remount-ro", "/"]);
        }
        if let Some(dir) = &self.workdir {
            push(&["--chdir", dir]);
        }
        push(&["--clearenv"]);
        for (k, v) in &self.env {
            push(&["--setenv", k, v]);
        }
        push(&["/usr/bin/setpriv"]);
        if let Some((uid, gid, groups)) = &self.user {
            push(&["--reuid", &uid.to_string(), "--regid", &gid.to_string()]);
            if groups.is_empty() {
                push(&["--clear-groups"]);
            } else {
                let list: Vec<String> = groups.iter().map(u32::to_string).collect();
                push(&["--groups", &list.join(",")]);
            }
        }
        if self.no_new_privs {
            push(&["--no-new-privs"]);
        }
        push(&["--"]);
        a.extend(self.argv.iter().cloned());
        a
    }
}

impl Sandbox {
    /// The directories above `targets` that the sandbox must create, parents first:
    /// none in `/`, `/usr`, `/proc`, `/dev` or inside a host `/etc` entry (those exist).
    fn parents(&self, targets: &[String]) -> Vec<String> {
        let mut dirs: Vec<String> = Vec::new();
        for target in targets {
            let mut dir = Path::new(target).parent();
            while let Some(d) = dir {
                let text = d.to_string_lossy().into_owned();
                if text == "/" {
                    break;
                }
                dirs.push(text);
                dir = d.parent();
            }
        }
        dirs.retain(|d| {
            let inside = |top: &str| d == top || d.starts_with(&format!("{top}/"));
            let host_etc = self
                .etc_entries
                .iter()
                .any(|(name, _)| inside(&format!("/etc/{name}")));
            !(inside("/usr") || inside("/proc") || inside("/dev") || host_etc || d == "/etc")
        });
        dirs.sort_by_key(|d| (d.matches('/').count(), d.clone()));
        dirs.dedup();
        dirs
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn host_entry(args: &mut Vec<String>, dir: &str, name: &str, entry: &HostEntry) {
    let full = format!("{dir}{name}");
    match entry {
        HostEntry::Symlink(target) => args.extend(["--symlink".into(), target.clone(), full]),
        HostEntry::Bind => args.extend(["--ro-bind".into(), full.clone(), full]),
    }
}

/// The entries of host directory `dir` (only those in `only`, if given) as the
/// sandbox reproduces them. Unreadable entries are left out.
pub fn host_entries(dir: &Path, only: Option<&[&str]>) -> Vec<(String, HostEntry)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(String, HostEntry)> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if only.is_some_and(|only| !only.contains(&name.as_str())) {
                return None;
            }
            let meta = std::fs::symlink_metadata(e.path()).ok()?;
            let entry = if meta.file_type().is_symlink() {
                HostEntry::Symlink(std::fs::read_link(e.path()).ok()?.to_string_lossy().into())
            } else {
                HostEntry::Bind
            };
            Some((name, entry))
        })
        .collect();
    entries.sort();
    entries
}

/// The top-level names besides `/usr` that programs expect.
pub const ROOT_NAMES: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox {
            hostname: "web-0".into(),
            read_only_root: true,
            root_entries: vec![
                ("lib".into(), HostEntry::Symlink("usr/lib".into())),
                ("opt".into(), HostEntry::Bind),
            ],
            etc_entries: vec![
                ("hosts".into(), HostEntry::Bind),
                ("passwd".into(), HostEntry::Bind),
                ("ssl".into(), HostEntry::Bind),
                (
                    "mtab".into(),
                    HostEntry::Symlink("../proc/self/mounts".into()),
                ),
            ],
            hosts: "/pods/p/hosts".into(),
            shim: "/env/kubesim-net.so".into(),
            binary: Some("/build/ottoscaler".into()),
            mounts: vec![
                Mount {
                    source: "/pods/p/volumes/inner".into(),
                    target: "/data/inner".into(),
                    read_only: true,
                },
                Mount {
                    source: "/pods/p/volumes/data".into(),
                    target: "/data".into(),
                    read_only: false,
                },
            ],
            user: Some((65532, 65532, vec![])),
            no_new_privs: true,
            workdir: Some("/data".into()),
            env: vec![("A".into(), "1".into())],
            argv: vec!["/kubesim/bin/ottoscaler".into(), "run".into()],
        }
    }

    /// Index of the first occurrence of `window` in `args`.
    fn find(args: &[String], window: &[&str]) -> usize {
        args.windows(window.len())
            .position(|w| w.iter().zip(window).all(|(a, b)| a == b))
            .unwrap_or_else(|| panic!("{window:?} not in {args:?}"))
    }

    #[test]
    fn the_bwrap_command_line_isolates_and_mounts_in_order() {
        let args = sandbox().bwrap_args(Some(3));
        find(&args, &["--unshare-pid"]);
        find(&args, &["--info-fd", "3"]);
        find(&args, &["--hostname", "web-0"]);
        find(&args, &["--symlink", "usr/lib", "/lib"]);
        find(&args, &["--ro-bind", "/opt", "/opt"]);
        find(&args, &["--ro-bind", "/etc/passwd", "/etc/passwd"]);
        find(&args, &["--symlink", "../proc/self/mounts", "/etc/mtab"]);
        // The host's /etc/hosts is replaced by the pod's.
        find(&args, &["--ro-bind", "/pods/p/hosts", "/etc/hosts"]);
        assert_eq!(args.iter().filter(|a| *a == "/etc/hosts").count(), 1);
        find(
            &args,
            &["--ro-bind", "/build/ottoscaler", "/kubesim/bin/ottoscaler"],
        );
        let kubesim = find(&args, &["--perms", "0755", "--dir", "/kubesim"]);
        let lib = find(&args, &["--perms", "0755", "--dir", "/kubesim/lib"]);
        assert!(kubesim < lib);
        assert!(lib < find(&args, &["--ro-bind", "/env/kubesim-net.so", SHIM_PATH]));
        let outer = find(&args, &["--bind", "/pods/p/volumes/data", "/data"]);
        let inner = find(
            &args,
            &["--ro-bind", "/pods/p/volumes/inner", "/data/inner"],
        );
        assert!(outer < inner, "parent mounts first");
        let ro = find(&args, &["--remount-ro", "/"]);
        assert!(inner < ro, "the root becomes read-only after the mounts");
        find(&args, &["--chdir", "/data"]);
        find(&args, &["--clearenv", "--setenv", "A", "1"]);
        let tail = find(
            &args,
            &[
                "/usr/bin/setpriv",
                "--reuid",
                "65532",
                "--regid",
                "65532",
                "--clear-groups",
                "--no-new-privs",
                "--",
                "/kubesim/bin/ottoscaler",
                "run",
            ],
        );
        assert_eq!(tail + 10, args.len(), "the command comes last");
    }

    #[test]
    fn a_writable_root_and_root_user_need_no_remount_or_uid_switch() {
        let mut s = sandbox();
        s.read_only_root = false;
        s.user = None;
        s.no_new_privs = false;
        s.binary = None;
        let args = s.bwrap_args(None);
        assert!(!args.contains(&"--remount-ro".to_string()));
        assert!(!args.contains(&"--info-fd".to_string()));
        assert!(!args.contains(&"--reuid".to_string()));
        find(
            &args,
            &["/usr/bin/setpriv", "--", "/kubesim/bin/ottoscaler"],
        );
        s.user = Some((1000, 0, vec![2000, 3000]));
        let args = s.bwrap_args(None);
        find(&args, &["--regid", "0", "--groups", "2000,3000"]);
    }
}
