"""qvit's operator domain for qonnx: the integer executor's non-linear steps that
`qvit export --format qonnx --integer-steps` writes as `qvit` nodes (Softmax, LayerNorm, Gelu,
LinearAttentionNormalize). qonnx finds this module by the nodes' domain, `qvit`: put the
folder holding it (tools/export) on the Python path before running such a model.

The arithmetic is in `steps.py`; docs/export.md lists every attribute.
"""

from onnx import helper

from qonnx.core.datatype import DataType
from qonnx.custom_op.base import CustomOp

from .steps import STEPS

class IntegerStep(CustomOp):
    """One `qvit` node: its attributes as a dict, its arithmetic from steps.py."""

    def attributes(self):
        return {a.name: helper.get_attribute_value(a) for a in self.onnx_node.attribute}

    def get_nodeattr_types(self):
        types = {}
        for a in self.onnx_node.attribute:
            kind = {1: "f", 2: "i", 3: "s", 6: "floats", 7: "ints"}[a.type]
            types[a.name] = (kind, True, None)
        return types

    def make_shape_compatible_op(self, model):
        return helper.make_node("Identity", [self.onnx_node.input[0]], [self.onnx_node.output[0]])

    def infer_node_datatype(self, model):
        model.set_tensor_datatype(self.onnx_node.output[0], DataType["FLOAT32"])

    def execute_node(self, context, graph):
        node = self.onnx_node
        attrs = self.attributes()
        for name, value in attrs.items():
            if isinstance(value, bytes):
                attrs[name] = value.decode()
        context[node.output[0]] = STEPS[node.op_type](context[node.input[0]], attrs)

    def verify_node(self):
        return [] if self.onnx_node.op_type in STEPS else [f"unknown qvit op {self.onnx_node.op_type}"]


class Softmax(IntegerStep):
    pass


class LayerNorm(IntegerStep):
    pass


class Gelu(IntegerStep):
    pass


class LinearAttentionNormalize(IntegerStep):
    """Changes the shape: [B, heads, d + 1, N] → [B, heads·d, height, width]."""

    def make_shape_compatible_op(self, model):
        attrs = self.attributes()
        # Shapes are not known yet when this runs; a QONNX export fixes the graph's batch.
        batch = model.get_tensor_shape(model.graph.input[0].name)[0]
        channels = attrs["heads"] * attrs["head_dim"]
        return self.make_const_shape_op([batch, channels, attrs["height"], attrs["width"]])


custom_op = {
    "Softmax": Softmax,
    "LayerNorm": LayerNorm,
    "Gelu": Gelu,
    "LinearAttentionNormalize": LinearAttentionNormalize,
}
