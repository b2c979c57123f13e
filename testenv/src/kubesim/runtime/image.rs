//! Which images kubesim runs for real, and as what.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Where a mapped entrypoint binary appears inside the sandbox.
pub const SANDBOX_BIN_DIR: &str = "/kubesim/bin";

/// How to run one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMapping {
    /// A host binary that stands for the image's ENTRYPOINT; it is bound read-only
    /// into the sandbox at `/kubesim/bin/<file name>`. `None`: the image has no
    /// entrypoint, and the container's `command`/`args` run as given, resolved on
    /// the sandbox's PATH (the host's `/usr`), like `redis-server` of a `redis` image.
    pub binary: Option<PathBuf>,
    /// The image's CMD: the arguments when the pod gives neither command nor args.
    pub default_args: Vec<String>,
}

impl ImageMapping {
    /// The image's entrypoint is this host binary.
    pub fn binary(path: impl Into<PathBuf>) -> ImageMapping {
        ImageMapping {
            binary: Some(path.into()),
            default_args: Vec::new(),
        }
    }

    /// No entrypoint: `command`/`args` of the pod run as they are.
    pub fn passthrough() -> ImageMapping {
        ImageMapping {
            binary: None,
            default_args: Vec::new(),
        }
    }

    /// The entrypoint as the sandbox sees it (empty without a binary).
    pub fn entrypoint(&self) -> Vec<String> {
        self.binary
            .as_deref()
            .and_then(Path::file_name)
            .map(|name| vec![format!("{SANDBOX_BIN_DIR}/{}", name.to_string_lossy())])
            .unwrap_or_default()
    }
}

/// Image reference (exactly as in the pod spec) -> how to run it. Pods whose images
/// are not in the map are simulated.
pub type ImageMap = BTreeMap<String, ImageMapping>;

/// Parses `IMAGE=PATH` (PATH a host binary, the entrypoint) or `IMAGE=` (no
/// entrypoint: the pod's command/args run as given), as `testenv up --map-image` takes it.
pub fn parse_mapping(text: &str) -> Result<(String, ImageMapping)> {
    let Some((image, path)) = text.split_once('=') else {
        bail!("--map-image {text:?}: expected IMAGE=PATH or IMAGE=");
    };
    let image = image.trim();
    if image.is_empty() {
        bail!("--map-image {text:?}: the image is empty");
    }
    let path = path.trim();
    if path.is_empty() {
        return Ok((image.to_string(), ImageMapping::passthrough()));
    }
    let path = std::fs::canonicalize(path)
        .map_err(|err| anyhow::anyhow!("--map-image {text:?}: {path}: {err}"))?;
    if !path.is_file() {
        bail!("--map-image {text:?}: {} is not a file", path.display());
    }
    Ok((image.to_string(), ImageMapping::binary(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_from_the_command_line() {
        let (image, mapping) = parse_mapping("redis:7-alpine=").unwrap();
        assert_eq!(image, "redis:7-alpine");
        assert_eq!(mapping, ImageMapping::passthrough());
        assert!(mapping.entrypoint().is_empty());
        let (image, mapping) = parse_mapping("ghcr.io/x/y:1=/bin/sh").unwrap();
        assert_eq!(image, "ghcr.io/x/y:1");
        assert!(mapping.binary.is_some());
        assert!(mapping.entrypoint()[0].starts_with("/kubesim/bin/"));
        assert!(parse_mapping("no-equals").is_err());
        assert!(parse_mapping("=/bin/sh").is_err());
        assert!(parse_mapping("x=/definitely/not/here").is_err());
    }
}
