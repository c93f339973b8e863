"""Makes masked-text.json: CLIP text embeddings under attention masks that hide tokens
before the pooled one (left padding, a hidden word), for tiny-clip and tiny-clip-wide.

transformers' CLIPTextTransformer adds the padding mask to the causal one, so a masked key
is hidden from every query; positions stay 0..seq whatever the mask. Right-padded batches,
where the two masks agree, are in tiny-clip.json / tiny-clip-wide.json already; these rows
are the ones where they do not.

Run it in a venv with transformers 5 and torch (requirements.txt of this folder; it ran with
transformers 5.17.0 and torch 2.11.0+cpu-threads on Linux x86_64), after `cargo xtask setup`:

    python tests/data/reference/clip/make_masked_reference.py
"""

import hashlib
import json
from pathlib import Path

import torch
import transformers
from transformers import CLIPModel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
MODELS = ["tiny-clip", "tiny-clip-wide"]

BOS, EOS, PAD = 49406, 49407, 0
# (input_ids, attention_mask). Both configs have eos_token_id 2, so a row is pooled at its
# first largest id: padding uses id 0 ("!"), which the argmax never picks (padding with EOS,
# the tokenizer's pad token, would pool a left-padded row at position 0).
ROWS = [
    # "a photo of a cat", left-padded by three.
    ([PAD, PAD, PAD, BOS, 320, 1125, 539, 320, 2368, EOS], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]),
    # The same words with "photo" hidden, right-padded by two.
    ([BOS, 320, 1125, 539, 320, 2368, EOS, PAD, PAD], [1, 1, 0, 1, 1, 1, 1, 0, 0]),
    # Left padding by one and the BOS hidden as well.
    ([PAD, BOS, 320, 2368, EOS], [0, 0, 1, 1, 1]),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    out = {
        "what": "normalized CLIPModel.get_text_features of each row alone, under its attention mask",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "models": {},
    }
    for name in MODELS:
        folder = ROOT / ".dp-assets" / "models" / name
        model = CLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
        rows = []
        with torch.no_grad():
            for ids, mask in ROWS:
                output = model.get_text_features(
                    input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask])
                )
                embeds = output if isinstance(output, torch.Tensor) else output.pooler_output
                unmasked = model.get_text_features(input_ids=torch.tensor([ids]))
                unmasked = unmasked if isinstance(unmasked, torch.Tensor) else unmasked.pooler_output
                # The mask must matter, or the row tests nothing.
                assert not torch.allclose(embeds, unmasked, atol=1e-4), (name, ids, mask)
                embeds = embeds / embeds.norm(dim=-1, keepdim=True)
                rows.append(
                    {
                        "input_ids": ids,
                        "attention_mask": mask,
                        "embedding": [float(f"{v:.7g}") for v in embeds[0].tolist()],
                    }
                )
        out["models"][name] = {"model_sha256": sha256(folder / "model.safetensors"), "rows": rows}
    (HERE / "masked-text.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
