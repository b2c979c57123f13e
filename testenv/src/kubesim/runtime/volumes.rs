//! A pod's volumes as files on the host: what each volume holds (pure, from the pod
//! spec and the objects it references) and writing it into the pod's directory.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};

use super::expand::{ConfigError, Sources, field};

/// The content of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An empty directory, writable by anyone (mode 0777, as the kubelet makes it).
    EmptyDir,
    /// Files (relative path, bytes, mode) in a directory of their own.
    Files(Vec<File>),
}

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Path relative to the volume's root (`items[].path`, or the key).
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// The default mode of configMap, secret and projected files (0644).
const DEFAULT_MODE: u32 = 0o644;

/// Everything the volumes of a pod need beyond the pod itself.
#[derive(Debug, Clone, Default)]
pub struct VolumeSources<'a> {
    /// ConfigMaps and Secrets of the namespace, pod IP, node IP.
    pub objects: Option<&'a Sources>,
    /// ServiceAccount tokens by audience ("" for the API server's own).
    pub tokens: BTreeMap<String, String>,
}

/// The audiences of the `serviceAccountToken` sources of the pod's projected
/// volumes ("" for the default), each once: the tokens to request.
pub fn token_audiences(pod: &Pod) -> Vec<String> {
    let mut audiences: Vec<String> = volumes(pod)
        .iter()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| t.audience.clone().unwrap_or_default())
        .collect();
    audiences.sort();
    audiences.dedup();
    audiences
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[])
}

/// Names of the ConfigMaps and Secrets that the pod's env and volumes reference, as
/// (config maps, secrets).
pub fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut maps, mut secrets) = (Vec::new(), Vec::new());
    let spec = pod.spec.as_ref();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or(&[]) {
        for var in c.env.iter().flatten() {
            let from = var.value_from.as_ref();
            if let Some(r) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
                maps.push(r.name.clone());
            }
            if let Some(r) = from.and_then(|f| f.secret_key_ref.as_ref()) {
                secrets.push(r.name.clone());
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                maps.push(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    for v in volumes(pod) {
        if let Some(c) = &v.config_map {
            maps.push(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &source.config_map {
                maps.push(c.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    for list in [&mut maps, &mut secrets] {
        list.sort();
        list.dedup();
    }
    (maps, secrets)
}

/// Files for `items` (or every key when there are none) of `data`. A missing
/// object or key is an error unless `optional`.
fn key_files(
    what: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: u32,
) -> Result<Vec<File>, ConfigError> {
    let Some(data) = data else {
        return if optional == Some(true) {
            Ok(Vec::new())
        } else {
            Err(ConfigError(format!("{what} not found")))
        };
    };
    let mode = |m: Option<i32>| {
        m.and_then(|m| u32::try_from(m).ok())
            .unwrap_or(default_mode)
    };
    match items.filter(|i| !i.is_empty()) {
        None => Ok(data
            .into_iter()
            .map(|(key, data)| File {
                path: key,
                data,
                mode: default_mode,
            })
            .collect()),
        Some(items) => items
            .iter()
            .filter_map(|item| match data.get(&item.key) {
                Some(bytes) => Some(Ok(File {
                    path: item.path.clone(),
                    data: bytes.clone(),
                    mode: mode(item.mode),
                })),
                None if optional == Some(true) => None,
                None => Some(Err(ConfigError(format!("{what} has no key {}", item.key)))),
            })
            .collect(),
    }
}

/// The content of every volume of `pod` by name. hostPath, PVCs and other kinds are
/// refused: kubesim does not provide them.
pub fn layout(pod: &Pod, src: &VolumeSources<'_>) -> Result<Vec<(String, Content)>, ConfigError> {
    let empty = Sources::default();
    let objects = src.objects.unwrap_or(&empty);
    let map_data = |name: &str| {
        objects.config_maps.get(name).map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect::<BTreeMap<_, _>>()
        })
    };
    let secret_data = |name: &str| objects.secrets.get(name).cloned();
    let mode_of = |m: Option<i32>| {
        m.and_then(|m| u32::try_from(m).ok())
            .unwrap_or(DEFAULT_MODE)
    };
    let mut out = Vec::new();
    for v in volumes(pod) {
        let content = if v.empty_dir.is_some() {
            Content::EmptyDir
        } else if let Some(c) = &v.config_map {
            let what = format!("configmap {:?}", c.name);
            Content::Files(key_files(
                &what,
                map_data(&c.name),
                c.items.as_deref(),
                c.optional,
                mode_of(c.default_mode),
            )?)
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let what = format!("secret {name:?}");
            Content::Files(key_files(
                &what,
                secret_data(&name),
                s.items.as_deref(),
                s.optional,
                mode_of(s.default_mode),
            )?)
        } else if let Some(p) = &v.projected {
            let mode = mode_of(p.default_mode);
            let mut files = Vec::new();
            for source in p.sources.iter().flatten() {
                if let Some(t) = &source.service_account_token {
                    let audience = t.audience.clone().unwrap_or_default();
                    let token = src.tokens.get(&audience).ok_or_else(|| {
                        ConfigError(format!("no token for audience {audience:?} yet"))
                    })?;
                    files.push(File {
                        path: t.path.clone(),
                        data: token.clone().into_bytes(),
                        mode,
                    });
                }
                if let Some(c) = &source.config_map {
                    let what = format!("configmap {:?}", c.name);
                    files.extend(key_files(
                        &what,
                        map_data(&c.name),
                        c.items.as_deref(),
                        c.optional,
                        mode,
                    )?);
                }
                if let Some(s) = &source.secret {
                    let what = format!("secret {:?}", s.name);
                    files.extend(key_files(
                        &what,
                        secret_data(&s.name),
                        s.items.as_deref(),
                        s.optional,
                        mode,
                    )?);
                }
                if let Some(d) = &source.downward_api {
                    for item in d.items.iter().flatten() {
                        let Some(f) = &item.field_ref else {
                            return Err(ConfigError(format!(
                                "volume {}: only fieldRef items of downwardAPI are supported",
                                v.name
                            )));
                        };
                        files.push(File {
                            path: item.path.clone(),
                            data: field(pod, &f.field_path, objects)?.into_bytes(),
                            mode: item.mode.map(|m| mode_of(Some(m))).unwrap_or(mode),
                        });
                    }
                }
            }
            Content::Files(files)
        } else {
            return Err(ConfigError(format!(
                "volume {}: only emptyDir, configMap, secret and projected volumes are supported",
                v.name
            )));
        };
        out.push((v.name.clone(), content));
    }
    Ok(out)
}

/// Writes `content` as directory `dir` (created; files of a previous write replaced).
pub fn write(dir: &Path, content: &Content) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = match content {
        Content::EmptyDir => 0o777,
        Content::Files(_) => 0o755,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", dir.display()))?;
    if let Content::Files(files) = content {
        for file in files {
            let path: PathBuf = dir.join(file.path.trim_start_matches('/'));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, &file.data)
                .with_context(|| format!("cannot write {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
                .with_context(|| format!("cannot chmod {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection, DownwardAPIVolumeFile,
        EmptyDirVolumeSource, ObjectFieldSelector, PodSpec, ProjectedVolumeSource,
        SecretVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
    };

    fn volume(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ..Volume::default()
        }
    }

    /// The projected volume the ServiceAccount admission plugin adds.
    fn api_access() -> Volume {
        let mut v = volume("kube-api-access-abcde");
        v.projected = Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..KeyToPath::default()
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        });
        v
    }

    fn pod(volumes: Vec<Volume>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        pod.spec = Some(PodSpec {
            volumes: Some(volumes),
            ..PodSpec::default()
        });
        pod
    }

    fn objects() -> Sources {
        Sources {
            config_maps: [
                (
                    "kube-root-ca.crt".to_string(),
                    [("ca.crt".to_string(), "PEM".to_string())].into(),
                ),
                (
                    "cfg".to_string(),
                    [
                        ("a.toml".to_string(), "a = 1".to_string()),
                        ("b".to_string(), "2".to_string()),
                    ]
                    .into(),
                ),
            ]
            .into(),
            secrets: [("s".to_string(), [("k".to_string(), b"v".to_vec())].into())].into(),
            ..Sources::default()
        }
    }

    #[test]
    fn the_service_account_volume_holds_token_ca_and_namespace() {
        let pod = pod(vec![api_access()]);
        assert_eq!(token_audiences(&pod), [""]);
        let objects = objects();
        let src = VolumeSources {
            objects: Some(&objects),
            tokens: [(String::new(), "TOKEN".to_string())].into(),
        };
        let layout = layout(&pod, &src).unwrap();
        let Content::Files(files) = &layout[0].1 else {
            panic!("{layout:?}")
        };
        let by_path: BTreeMap<&str, &[u8]> = files
            .iter()
            .map(|f| (f.path.as_str(), f.data.as_slice()))
            .collect();
        assert_eq!(by_path["token"], b"TOKEN");
        assert_eq!(by_path["ca.crt"], b"PEM");
        assert_eq!(by_path["namespace"], b"ns");
        assert!(files.iter().all(|f| f.mode == 0o644));
        // Without the token (not requested yet) the volume cannot be made.
        let no_token = VolumeSources {
            objects: Some(&objects),
            tokens: BTreeMap::new(),
        };
        assert!(layout_err(&pod, &no_token).contains("no token"));
    }

    fn layout_err(pod: &Pod, src: &VolumeSources<'_>) -> String {
        layout(pod, src).unwrap_err().0
    }

    #[test]
    fn config_map_and_secret_volumes_give_keys_or_items_as_files() {
        let mut all_keys = volume("config");
        all_keys.config_map = Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            ..ConfigMapVolumeSource::default()
        });
        let mut one_item = volume("secret");
        one_item.secret = Some(SecretVolumeSource {
            secret_name: Some("s".into()),
            default_mode: Some(0o400),
            items: Some(vec![KeyToPath {
                key: "k".into(),
                path: "sub/key.txt".into(),
                ..KeyToPath::default()
            }]),
            ..SecretVolumeSource::default()
        });
        let mut scratch = volume("scratch");
        scratch.empty_dir = Some(EmptyDirVolumeSource::default());
        let pod = pod(vec![all_keys, one_item, scratch]);
        assert_eq!(
            referenced_objects(&pod),
            (vec!["cfg".to_string()], vec!["s".to_string()])
        );
        let objects = objects();
        let src = VolumeSources {
            objects: Some(&objects),
            tokens: BTreeMap::new(),
        };
        let layout = layout(&pod, &src).unwrap();
        assert_eq!(
            layout[0].1,
            Content::Files(vec![
                File {
                    path: "a.toml".into(),
                    data: b"a = 1".to_vec(),
                    mode: 0o644
                },
                File {
                    path: "b".into(),
                    data: b"2".to_vec(),
                    mode: 0o644
                },
            ])
        );
        assert_eq!(
            layout[1].1,
            Content::Files(vec![File {
                path: "sub/key.txt".into(),
                data: b"v".to_vec(),
                mode: 0o400
            }])
        );
        assert_eq!(layout[2].1, Content::EmptyDir);

        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("secret"), &layout[1].1).unwrap();
        let written = dir.path().join("secret/sub/key.txt");
        assert_eq!(std::fs::read(&written).unwrap(), b"v");
        let mode = std::fs::metadata(&written).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400);
    }

    #[test]
    fn a_missing_required_config_map_is_a_config_error_and_an_optional_one_is_empty() {
        let mut v = volume("config");
        v.config_map = Some(ConfigMapVolumeSource {
            name: "absent".into(),
            ..ConfigMapVolumeSource::default()
        });
        let src = VolumeSources::default();
        assert!(layout_err(&pod(vec![v.clone()]), &src).contains("absent"));
        if let Some(c) = v.config_map.as_mut() {
            c.optional = Some(true);
        }
        let layout = layout(&pod(vec![v]), &src).unwrap();
        assert_eq!(layout[0].1, Content::Files(vec![]));
    }
}
