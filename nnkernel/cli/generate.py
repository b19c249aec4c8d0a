"""``nnkernel generate RUN --prompt TEXT --tokens N --temperature T --top-k K [--seed S]``.

    nnkernel generate runs/shakespeare --prompt "ROMEO:" --tokens 500 --temperature 0.8 \\
        --top-k 40 --seed 1

Prints the prompt followed by N characters sampled from a language model run
(`nnkernel.nn.generate`): softmax(logits / T) over the K likeliest next characters,
T = 0 for the likeliest one each time. The prompt is encoded with the run's own
vocabulary (config.json dataset.tokenizer): a character the training text never had
is refused by name. The same --seed prints the same text.
"""

from __future__ import annotations

import json
import sys

from ..errors import CheckpointError, ConfigError
from . import threads
from .runtime import backend_for


def add_parser(sub, add_device_flags, add_output_flags, types):
    generate = sub.add_parser(
        "generate", help="sample text from a language model run",
        description="Continue a prompt with characters sampled from a run trained with "
        "--model gpt or lstm.")
    generate.add_argument("run_dir", metavar="DIR", help="a language model run (nnkernel "
                          "train --dataset TEXT --model gpt|lstm --out DIR)")
    generate.add_argument("--prompt", default="\n", help="the text to continue (default: a "
                          "newline); only characters of the training text")
    generate.add_argument("--tokens", type=types.non_negative_int, default=500,
                          help="characters to generate (default 500)")
    generate.add_argument("--temperature", type=types.float_in(0.0, float("inf")),
                          default=1.0, help="softmax temperature (default 1; 0: always the "
                          "likeliest character)")
    generate.add_argument("--top-k", type=types.positive_int, default=None,
                          help="sample among the K likeliest characters only")
    generate.add_argument("--seed", type=types.non_negative_int, default=None,
                          help="seed of the sampling (default: a new one each time)")
    add_device_flags(generate)
    add_output_flags(generate)


def run(args) -> int:
    from ..io import run_dir
    from ..nn.generate import generate
    from ..run_settings import RunConfig
    from .text_runs import is_text_run, saved_tokenizer

    saved = run_dir.load(args.run_dir)
    if not is_text_run(saved.config):
        raise ConfigError(f"{saved.directory} is not a language model run (it was trained with "
                          f"--model {saved.config.get('hyperparameters', {}).get('model') or 'mlp'}"
                          f"); generate samples from runs of --model gpt or lstm")
    try:
        config = RunConfig.from_json(saved.config, str(saved.directory / run_dir.CONFIG))
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    tokenizer = saved_tokenizer(config, saved.directory)
    prompt = args.prompt
    if not prompt:
        raise ConfigError("--prompt is empty; give at least one character to continue")
    ids = tokenizer.encode(prompt, what="--prompt")
    backend = backend_for(args, config.device, config.backend, config.dtype, False)
    model = saved.build_model(backend.name, backend.device)
    if threads.on_cpu(backend.device_name) and not args.threads:  # one row at a time: small
        threads.apply(threads.choose_for_rows(model, config.block_size or 1)[0])
    out = generate(model, ids, args.tokens, temperature=args.temperature, top_k=args.top_k,
                   seed=args.seed)
    text = tokenizer.decode(out)
    if args.json:
        print(json.dumps({"run": str(saved.directory), "prompt": prompt,
                          "text": text[len(prompt):], "tokens": args.tokens,
                          "temperature": args.temperature, "top_k": args.top_k,
                          "seed": args.seed}))
    else:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    return 0
