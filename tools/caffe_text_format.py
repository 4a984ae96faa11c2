"""Prototxt spellings read by real Caffe's text parser (ReadProtoFromTextFile, i.e. protobuf's C++
TextFormat::Parse, through Caffe's `upgrade_net_proto_text`), written as the golden file
tests/golden/caffe/text_format.json that tests/test_io_schema.py checks our reader against.

For each snippet (a NetParameter text) the file keeps what Caffe made of it: the net it wrote
(upgraded where the snippet used `input:` fields, as the tool does) or the parse error its
protobuf printed.

  .venv/bin/python tools/caffe_text_format.py <caffe>/build/tools tests/golden/caffe/text_format.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from caffe_fuzz_upgrade import caffe_upgrade  # this folder, on sys.path as the script's own

RELU = 'layer {{ name: "x" type: "ReLU" relu_param {{ negative_slope: {} }} }}'
LEVEL = "state {{ level: {} }}"

SNIPPETS = {
    # a non-repeated field given twice: C++ Parse refuses it (Merge would keep the last)
    "repeated_scalar": 'name: "a" name: "b"',
    "repeated_message": "state { phase: TEST } state { level: 1 }",
    "repeated_type": 'layer { name: "x" type: "ReLU" type: "TanH" }',
    "repeated_param_message": ('layer { name: "x" type: "Convolution" convolution_param { num_output: 2 } '
                               "convolution_param { bias_term: false } }"),
    "repeated_lr_mult": 'layer { name: "x" param { lr_mult: 1 lr_mult: 2 } }',
    # numbers
    "float_suffix": RELU.format("0.5f"), "int_float_suffix": RELU.format("1f"),
    "exponent_suffix": RELU.format("1e2f"), "inf": RELU.format("inf"), "minus_inf": RELU.format("-inf"),
    "infinity": RELU.format("Infinity"), "inf_upper": RELU.format("INF"), "nan": RELU.format("nan"),
    "inff": RELU.format("inff"), "above_float_range": RELU.format("1e40"), "below_float_range": RELU.format("1e-50"),
    "leading_dot": RELU.format(".5"), "trailing_dot": RELU.format("1."), "int_for_float": RELU.format("2"),
    "negative_int_for_float": RELU.format("-3"), "minus_zero": RELU.format("-0"), "hex_for_float": RELU.format("0x10"),
    "hex": LEVEL.format("0x10"), "octal": LEVEL.format("010"), "float_for_int": LEVEL.format("1.0"),
    "exponent_for_int": LEVEL.format("1e2"), "nan_for_int": LEVEL.format("nan"), "plus": LEVEL.format("+3"),
    "minus_space": LEVEL.format("- 3"), "double_minus": LEVEL.format("--3"), "int32_overflow": LEVEL.format("2147483648"),
    "negative_uint": 'layer { name: "x" type: "Convolution" convolution_param { num_output: -1 } }',
    "uint32_overflow": 'layer { name: "x" type: "Convolution" convolution_param { num_output: 4294967296 } }',
    # enums and bools
    "enum_number": "state { phase: 1 }", "enum_bad_number": "state { phase: 7 }",
    "enum_lower_case": "state { phase: test }", "enum_unknown": "state { phase: VAL }",
    "bool_1": "force_backward: 1", "bool_t": "force_backward: t", "bool_True": "force_backward: True",
    "bool_2": "force_backward: 2",
    # strings
    "single_quotes": "name: 'a'", "escapes": r'name: "\x41\101"', "unicode_escape": r'name: "\u00e9"',
    "adjacent_strings": 'name: "a" "b"', "utf8": 'name: "é"', "newline_in_string": 'name: "a\nb"',
    # structure
    "separators": 'name: "a"; force_backward: true,', "angle_brackets": "state < phase: TEST >",
    "colon_before_message": "state: { phase: TEST }", "list_of_scalars": 'input: ["a", "b"] input_dim: [1, 2, 3, 4, 1, 2, 3, 4]',
    "list_of_messages": 'layer [{ name: "a" }, { name: "b" }]', "empty": "", "only_comment": "# nothing",
    "stray_brace": 'name: "a" }', "unknown_field": 'nme: "a"', "field_number": '1: "a"',
    "extension": 'name: "a" [caffe.foo] { }',
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tools", type=Path, help="Caffe's build/tools folder")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in SNIPPETS.items():
            written, status, log = caffe_upgrade(args.tools / "upgrade_net_proto_text", text, Path(tmp))
            errors = [line.split("Error parsing text-format caffe.NetParameter: ", 1)[1]
                      for line in log.splitlines() if "Error parsing text-format" in line]
            if status == 2:
                cases[name] = {"text": text, "caffe_error": errors[0]}
            elif status == 0:
                cases[name] = {"text": text, "caffe_net": written}
            else:
                raise SystemExit(f"{name}: upgrade_net_proto_text exited {status}:\n{log}")
    args.out.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} snippets, Caffe refused {sum('caffe_error' in c for c in cases.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
