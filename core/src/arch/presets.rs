//! The model presets shipped in `presets/models/`, compiled into the binary so that a preset name
//! works from any directory.

macro_rules! preset {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../presets/models/", $name, ".ron")),
        )
    };
}

/// `(name, RON text)` of every shipped model preset.
pub const PRESETS: &[(&str, &str)] = &[
    preset!("efficientvit-b0"),
    preset!("efficientvit-b1"),
    preset!("efficientvit-b2"),
    preset!("efficientvit-b3"),
    preset!("efficientvit-micro"),
    preset!("efficientvit-micro-spread"),
    preset!("deit-tiny"),
    preset!("deit-small"),
    preset!("deit-base"),
    preset!("deit-micro"),
];

/// The names of the shipped model presets.
pub fn preset_names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|(name, _)| *name)
}
