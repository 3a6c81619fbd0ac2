//! From a checkpoint's key to the official parameter name qvit's graphs use.
//!
//! Published checkpoints wrap the official names: `state_dict.` (MIT's trainer), `model.`
//! (DeiT's `{"model": …}` files), `module.` (DataParallel). timm re-hosts the MIT EfficientViT
//! weights under its own module names; those are mapped back here, following the table in
//! timm's port (`efficientvit_mit.py`): `stem.in_conv` is the official
//! `backbone.input_stem.op_list.0`, `stem.res{k}` is `op_list.{k+1}`, `stages.{s}.blocks.{j}`
//! is `backbone.stages.{s}.op_list.{j}`, and the head's `in_conv` / `classifier.{0,1,4}` are
//! `op_list.0` / `op_list.2.linear`, `op_list.2.norm`, `op_list.3.linear`.

use crate::arch::Family;

/// Wrappers that published checkpoints put before the module names.
const PREFIXES: [&str; 3] = ["state_dict.", "model.", "module."];

/// The official name a checkpoint key stands for in a model of `family`.
pub fn official(key: &str, family: Family) -> String {
    let mut name = key;
    while let Some(rest) = PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
        name = rest;
    }
    match family {
        Family::EfficientVit => from_timm_efficientvit(name).unwrap_or_else(|| name.to_string()),
        Family::Deit => name.to_string(),
    }
}

/// timm's EfficientViT (MIT) key as the official one, or `None` when it is not a timm key.
fn from_timm_efficientvit(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("stem.in_conv.") {
        return Some(format!("backbone.input_stem.op_list.0.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("stem.res") {
        let (k, rest) = rest.split_once('.')?;
        let k: usize = k.parse().ok()?;
        return Some(format!("backbone.input_stem.op_list.{}.{rest}", k + 1));
    }
    if let Some(rest) = name.strip_prefix("stages.") {
        let (s, rest) = rest.split_once('.')?;
        let rest = rest.strip_prefix("blocks.")?;
        s.parse::<usize>().ok()?;
        return Some(format!("backbone.stages.{s}.op_list.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("head.in_conv.") {
        return Some(format!("head.op_list.0.{rest}"));
    }
    let rest = name.strip_prefix("head.classifier.")?;
    let (index, field) = rest.split_once('.')?;
    let module = match index {
        "0" => "op_list.2.linear",
        "1" => "op_list.2.norm",
        "4" => "op_list.3.linear",
        _ => return None,
    };
    Some(format!("head.{module}.{field}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_are_stripped() {
        let e = Family::EfficientVit;
        assert_eq!(
            official(
                "state_dict.backbone.stages.0.op_list.0.main.depth_conv.conv.weight",
                e
            ),
            "backbone.stages.0.op_list.0.main.depth_conv.conv.weight"
        );
        assert_eq!(
            official("module.model.blocks.0.attn.qkv.weight", Family::Deit),
            "blocks.0.attn.qkv.weight"
        );
        assert_eq!(official("cls_token", Family::Deit), "cls_token");
    }

    #[test]
    fn timm_efficientvit_keys_map_to_official_ones() {
        let e = Family::EfficientVit;
        for (timm, official_name) in [
            (
                "stem.in_conv.conv.weight",
                "backbone.input_stem.op_list.0.conv.weight",
            ),
            (
                "stem.res0.main.depth_conv.norm.running_var",
                "backbone.input_stem.op_list.1.main.depth_conv.norm.running_var",
            ),
            (
                "stem.res1.main.point_conv.conv.weight",
                "backbone.input_stem.op_list.2.main.point_conv.conv.weight",
            ),
            (
                "stages.2.blocks.1.context_module.main.aggreg.0.1.weight",
                "backbone.stages.2.op_list.1.context_module.main.aggreg.0.1.weight",
            ),
            ("head.in_conv.norm.bias", "head.op_list.0.norm.bias"),
            ("head.classifier.0.weight", "head.op_list.2.linear.weight"),
            ("head.classifier.1.bias", "head.op_list.2.norm.bias"),
            ("head.classifier.4.weight", "head.op_list.3.linear.weight"),
        ] {
            assert_eq!(official(timm, e), official_name, "{timm}");
        }
        // Official names pass through; unknown ones are left for the checker to report.
        assert_eq!(
            official("head.op_list.0.conv.weight", e),
            "head.op_list.0.conv.weight"
        );
        assert_eq!(
            official("head.classifier.2.weight", e),
            "head.classifier.2.weight"
        );
        assert_eq!(official("stages.x.blocks.0.a", e), "stages.x.blocks.0.a");
    }
}
