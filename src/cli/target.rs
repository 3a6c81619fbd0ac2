//! Reading the `PROJECT|MODEL` argument that most subcommands take.

use std::path::Path;

use qvit_core::explore::DesignSpace;
use qvit_core::project::Project;

/// A project file, a model RON file or a preset name; `None` is the shipped default project.
pub fn project(target: Option<&str>) -> qvit_core::Result<Project> {
    let Some(target) = target else {
        return Ok(Project::default());
    };
    let path = Path::new(target);
    if path.is_file() && is_project_file(path) {
        Project::load(path)
    } else {
        Ok(Project::for_model(target))
    }
}

/// A model spec starts with its family (`EfficientViT(` / `DeiT(`); anything else is read as a
/// project, so that a malformed project reports its own error.
fn is_project_file(path: &Path) -> bool {
    let first = first_line(path);
    !(first.starts_with("EfficientViT") || first.starts_with("DeiT"))
}

/// The first line of a RON file that is not blank or a comment (empty if unreadable).
pub fn first_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#!"))
        .unwrap_or("")
        .to_string()
}

/// A design space: a `DesignSpace(…)` file, or a project file with a `sweep` section.
pub fn design_space(path: &Path) -> anyhow::Result<DesignSpace> {
    if first_line(path).starts_with("DesignSpace") {
        return Ok(DesignSpace::load(path)?);
    }
    let origin = path.display().to_string();
    Project::load(path)?.design_space(&origin)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{origin}: this project has no `sweep` section; add one such as `sweep: Some(name: \
             \"engines\", mat_pes: [8, 16], mat_lanes: [8], rmac_pes: [16], rmac_lanes: [8], \
             copies: [1, 8], bits: [\"w8a8\"])` (the explorer's Explore tab writes it) or give a \
             design-space file (presets/sweeps/)"
        )
    })
}
