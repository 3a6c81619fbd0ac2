//! Reading the `PROJECT|MODEL` argument that most subcommands take.

use std::path::Path;

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
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#!"))
        .unwrap_or("");
    !(first.starts_with("EfficientViT") || first.starts_with("DeiT"))
}
