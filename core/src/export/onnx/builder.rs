//! An ONNX graph under construction, on the protobuf messages generated from the official
//! `onnx.proto` (crate `onnx-protobuf`): nodes in topological order, initializers, and names kept
//! unique.

use std::collections::HashSet;

use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto, type_proto,
};
use protobuf::{EnumOrUnknown, MessageField};

/// ONNX element types qvit writes (`TensorProto.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Uint16 = 4,
    Int16 = 5,
    Int64 = 7,
    Uint4 = 21,
    Int4 = 22,
}

impl ElementType {
    /// The integer type that holds `bits`-bit codes, signed or not: 4-bit types for up to 4
    /// bits, then 8 and 16.
    pub fn holding(bits: u8, signed: bool) -> Self {
        match (bits, signed) {
            (..=4, true) => ElementType::Int4,
            (..=4, false) => ElementType::Uint4,
            (..=8, true) => ElementType::Int8,
            (..=8, false) => ElementType::Uint8,
            (_, true) => ElementType::Int16,
            (_, false) => ElementType::Uint16,
        }
    }

    /// The codes the type holds, `(min, max)`.
    pub fn range(self) -> (i32, i32) {
        match self {
            ElementType::Int4 => (-8, 7),
            ElementType::Uint4 => (0, 15),
            ElementType::Int8 => (-128, 127),
            ElementType::Uint8 => (0, 255),
            ElementType::Int16 => (-32768, 32767),
            ElementType::Uint16 => (0, 65535),
            ElementType::Float | ElementType::Int64 => (i32::MIN, i32::MAX),
        }
    }

    /// `codes` (each within [`ElementType::range`]) as ONNX's little-endian raw data: 4-bit
    /// codes two to a byte, the first in the low nibble.
    pub fn pack(self, codes: &[i32]) -> Vec<u8> {
        match self {
            ElementType::Int4 | ElementType::Uint4 => codes
                .chunks(2)
                .map(|pair| {
                    let nibble = |v: i32| (v & 0xF) as u8;
                    nibble(pair[0]) | pair.get(1).map_or(0, |&v| nibble(v) << 4)
                })
                .collect(),
            ElementType::Int8 | ElementType::Uint8 => codes.iter().map(|&v| v as u8).collect(),
            ElementType::Int16 | ElementType::Uint16 => codes
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect(),
            ElementType::Int64 => codes
                .iter()
                .flat_map(|&v| i64::from(v).to_le_bytes())
                .collect(),
            ElementType::Float => codes
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect(),
        }
    }
}

/// One axis of a graph input or output: the batch, whose size the caller chooses, or a fixed
/// size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Batch,
    Fixed(usize),
}

/// A node attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Str(String),
}

/// An ONNX graph being built.
#[derive(Debug, Default)]
pub struct OnnxGraph {
    graph: GraphProto,
    used: HashSet<String>,
}

impl OnnxGraph {
    pub fn new(name: &str) -> Self {
        let mut graph = GraphProto::new();
        graph.name = name.to_string();
        Self {
            graph,
            used: HashSet::new(),
        }
    }

    /// `base`, or `base_2`, `base_3`… if taken: every value in a graph has one producer.
    pub fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while self.used.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.used.insert(name.clone());
        name
    }

    /// A float initializer named exactly `name` (a checkpoint's parameter name), with a doc
    /// string when its values are not the checkpoint's own (folded, transformed).
    pub fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32], doc: &str) -> String {
        let mut raw = Vec::with_capacity(data.len() * 4);
        data.iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes()));
        self.raw_initializer(name, ElementType::Float, dims, raw, doc)
    }

    /// An initializer of any element type from its little-endian bytes (4-bit types two per
    /// byte, low nibble first, as ONNX packs them).
    pub fn raw_initializer(
        &mut self,
        name: &str,
        element: ElementType,
        dims: &[usize],
        raw: Vec<u8>,
        doc: &str,
    ) -> String {
        let name = self.unique(name);
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.data_type = element as i32;
        t.dims = dims.iter().map(|&d| d as i64).collect();
        t.raw_data = raw;
        t.doc_string = doc.to_string();
        self.graph.initializer.push(t);
        name
    }

    /// A 1-D int64 constant (shapes, axes, pads, indices).
    pub fn ints(&mut self, base: &str, values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_initializer(base, ElementType::Int64, &[values.len()], raw, "")
    }

    /// A 0-D int64 constant (a `Gather` index that drops its axis).
    pub fn scalar_i64(&mut self, base: &str, value: i64) -> String {
        self.raw_initializer(
            base,
            ElementType::Int64,
            &[],
            value.to_le_bytes().to_vec(),
            "",
        )
    }

    /// A float constant of any shape (per-channel scales, broadcast factors).
    pub fn floats(&mut self, base: &str, dims: &[usize], values: &[f32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_initializer(base, ElementType::Float, dims, raw, "")
    }

    /// Integer codes of `element` type (zero-points, quantized weights).
    pub fn codes(
        &mut self,
        name: &str,
        element: ElementType,
        dims: &[usize],
        codes: &[i32],
        doc: &str,
    ) -> String {
        let raw = element.pack(codes);
        self.raw_initializer(name, element, dims, raw, doc)
    }

    /// A 0-D float constant.
    pub fn scalar_f32(&mut self, base: &str, value: f32) -> String {
        self.raw_initializer(
            base,
            ElementType::Float,
            &[],
            value.to_le_bytes().to_vec(),
            "",
        )
    }

    /// Adds a node of the default domain whose one output is named after `output` (made
    /// unique); returns the output's name.
    pub fn node(
        &mut self,
        op_type: &str,
        output: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> String {
        self.node_in("", op_type, output, inputs, attrs)
    }

    /// [`OnnxGraph::node`] in another operator domain (QONNX's, qvit's).
    pub fn node_in(
        &mut self,
        domain: &str,
        op_type: &str,
        output: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> String {
        let output = self.unique(output);
        let mut node = NodeProto::new();
        node.op_type = op_type.to_string();
        node.domain = domain.to_string();
        node.name = format!("{output}/{op_type}");
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = vec![output.clone()];
        node.attribute = attrs.iter().map(|(n, v)| attribute(n, v)).collect();
        self.graph.node.push(node);
        output
    }

    /// Declares a graph input of floats.
    pub fn input(&mut self, name: &str, dims: &[Dim], doc: &str) -> String {
        let name = self.unique(name);
        self.graph.input.push(value_info(&name, dims, doc));
        name
    }

    /// Declares an existing value as a graph output of floats.
    pub fn output(&mut self, name: &str, dims: &[Dim], doc: &str) {
        self.graph.output.push(value_info(name, dims, doc));
    }

    /// The finished model: IR version, operator sets, producer, doc string and metadata.
    pub fn into_model(
        mut self,
        opsets: &[(&str, i64)],
        doc: &str,
        metadata: &[(String, String)],
    ) -> ModelProto {
        self.graph.doc_string = doc.to_string();
        let mut model = ModelProto::new();
        model.ir_version = IR_VERSION;
        model.producer_name = "qvit".into();
        model.producer_version = env!("CARGO_PKG_VERSION").into();
        model.doc_string = doc.to_string();
        model.opset_import = opsets
            .iter()
            .map(|&(domain, version)| {
                let mut o = OperatorSetIdProto::new();
                o.domain = domain.to_string();
                o.version = version;
                o
            })
            .collect();
        model.metadata_props = metadata
            .iter()
            .map(|(k, v)| {
                let mut e = StringStringEntryProto::new();
                e.key = k.clone();
                e.value = v.clone();
                e
            })
            .collect();
        model.graph = MessageField::some(self.graph);
        model
    }
}

/// IR version 10 (ONNX 1.16): the first with 4-bit element types, read by ONNX Runtime ≥ 1.18.
pub const IR_VERSION: i64 = 10;

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    let kind = match value {
        Attr::Int(i) => {
            a.i = *i;
            AttributeType::INT
        }
        Attr::Ints(v) => {
            a.ints = v.clone();
            AttributeType::INTS
        }
        Attr::Float(f) => {
            a.f = *f;
            AttributeType::FLOAT
        }
        Attr::Floats(v) => {
            a.floats = v.clone();
            AttributeType::FLOATS
        }
        Attr::Str(s) => {
            a.s = s.as_bytes().to_vec();
            AttributeType::STRING
        }
    };
    a.type_ = EnumOrUnknown::new(kind);
    a
}

fn value_info(name: &str, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims
        .iter()
        .map(|d| {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.value = Some(match d {
                Dim::Batch => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
            });
            dim
        })
        .collect();
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = ElementType::Float as i32;
    tensor.shape = MessageField::some(shape);
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    v.type_ = MessageField::some(ty);
    v.doc_string = doc.to_string();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_packed_as_onnx_stores_them() {
        // Two 4-bit codes per byte, the first in the low nibble; an odd count pads with 0.
        // -8 = 0b1000, 7 = 0b0111, -1 = 0b1111.
        assert_eq!(ElementType::Int4.pack(&[-8, 7, -1]), [0x78, 0x0F]);
        assert_eq!(ElementType::Uint4.pack(&[15, 0, 3, 12]), [0x0F, 0xC3]);
        assert_eq!(ElementType::Int8.pack(&[-128, 127, -1]), [0x80, 0x7F, 0xFF]);
        assert_eq!(
            ElementType::Uint16.pack(&[65535, 258]),
            [0xFF, 0xFF, 0x02, 0x01]
        );
        assert_eq!(ElementType::Int16.pack(&[-2]), [0xFE, 0xFF]);
    }

    #[test]
    fn each_width_gets_the_smallest_type_that_holds_it() {
        assert_eq!(ElementType::holding(2, true), ElementType::Int4);
        assert_eq!(ElementType::holding(4, false), ElementType::Uint4);
        assert_eq!(ElementType::holding(5, true), ElementType::Int8);
        assert_eq!(ElementType::holding(8, false), ElementType::Uint8);
        assert_eq!(ElementType::holding(9, false), ElementType::Uint16);
        assert_eq!(ElementType::holding(16, true), ElementType::Int16);
        for bits in 2..=16u8 {
            for signed in [false, true] {
                let (lo, hi) = ElementType::holding(bits, signed).range();
                let (need_lo, need_hi) = if signed {
                    (-(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1)
                } else {
                    (0, (1 << bits) - 1)
                };
                assert!(
                    lo <= need_lo && need_hi <= hi,
                    "{bits} bits, signed {signed}"
                );
            }
        }
    }

    #[test]
    fn names_are_made_unique() {
        let mut g = OnnxGraph::new("m");
        assert_eq!(g.unique("a"), "a");
        assert_eq!(g.unique("a"), "a_2");
        assert_eq!(g.unique("a"), "a_3");
    }
}
