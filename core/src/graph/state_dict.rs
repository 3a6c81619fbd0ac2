//! PyTorch's `state_dict()` order from parameter names.
//!
//! PyTorch lists a module's own parameters and buffers first, then recurses into its children in
//! registration order. Graph nodes appear in execution order, which matches registration order for
//! both families, except that a module's own tensors (DeiT's root `cls_token` and `pos_embed`) are
//! used after its first child runs. Rebuilding the module tree from the dotted names and walking it
//! own-tensors-first gives PyTorch's order.

use super::ParamSpec;

#[derive(Default)]
struct Module {
    own: Vec<ParamSpec>,
    children: Vec<(String, Module)>,
}

impl Module {
    fn insert(&mut self, path: &[&str], param: ParamSpec) {
        match path {
            [] | [_] => self.own.push(param),
            [child, rest @ ..] => {
                let index = match self.children.iter().position(|(n, _)| n == child) {
                    Some(i) => i,
                    None => {
                        self.children.push((child.to_string(), Module::default()));
                        self.children.len() - 1
                    }
                };
                self.children[index].1.insert(rest, param);
            }
        }
    }

    fn flatten(self, out: &mut Vec<ParamSpec>) {
        out.extend(self.own);
        for (_, child) in self.children {
            child.flatten(out);
        }
    }
}

/// Reorders parameters (given in first-use order) into PyTorch's `state_dict()` order.
pub(super) fn pytorch_order(params: impl IntoIterator<Item = ParamSpec>) -> Vec<ParamSpec> {
    let mut root = Module::default();
    for p in params {
        let name = p.name.clone();
        let path: Vec<&str> = name.split('.').collect();
        root.insert(&path, p);
    }
    let mut out = Vec::new();
    root.flatten(&mut out);
    out
}
