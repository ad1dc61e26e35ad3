"""Raw data of the DSL example spec, shared by the DSL and format tests."""

EXAMPLE_DATA = {
    "model": "gpt-tiny",
    "vocab": 256,
    "d_model": 128,
    "extends": "base.arch",
    "train": {"lr": 3e-4, "steps": 100},
    "vars": {"ffn": "${d_model * 4}"},
    "define": {
        "block": [
            {"residual": [{"norm": "rms"}, {"attention": {"heads": 4, "pos": "rope"}}]},
            {"residual": [{"norm": "rms"}, {"mlp": {"mult": 4, "act": "swiglu"}}]},
        ]
    },
    "layers": [
        "embed",
        {"repeat": {"n": 4, "body": ["block"]}},
        {"loop": {"steps": 2, "tie": "cycle(2)", "body": ["block", "block"]}},
        {"norm": "rms"},
        {"head": {"tied": True}},
    ],
}
