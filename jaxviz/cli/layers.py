"""`jaxviz layers`: the model's layer names and shapes."""

from __future__ import annotations

import json

from jaxviz.cli._common import add_model_flag


def register(sub) -> None:
    p = sub.add_parser("layers", help="list a model's layers and their shapes")
    add_model_flag(p)
    p.add_argument("--json", action="store_true", help="print JSON {name: shape}")
    p.set_defaults(run=run)


def run(args) -> int:
    from jaxviz.models import load_model

    model = load_model(args.model)
    if args.json:
        print(json.dumps({k: list(v) for k, v in model.layers.items()}))
        return 0
    width = max(map(len, model.layers))
    print(f"{model.name} (input {model.resolution}x{model.resolution}x3)")
    for name, shape in model.layers.items():
        print(f"  {name:<{width}}  {'x'.join(map(str, shape))}")
    if model.hidden_layers:
        shown = ", ".join(list(model.hidden_layers)[-3:])
        print(f"  and {len(model.hidden_layers)} BatchNorm outputs before their activation, also targets "
              f"(e.g. {shown}; README \"Pre-activation targets\")")
    return 0
