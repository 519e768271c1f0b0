# Reference sentence embeddings of all-MiniLM-L6-v2, computed independently of candle: the
# tokenizer from tokenizer.json (Hugging Face `tokenizers`), a NumPy (float64) BERT forward pass
# over model.safetensors, mean pooling over the attention mask, L2 normalisation.
#
# Made with: python3 -m venv venv && venv/bin/pip install numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3
# then: venv/bin/python minilm_reference.py ~/.cache/dynamo/models/all-MiniLM-L6-v2 > minilm_reference.json
# (the model directory as dynamo_assets::ALL_MINILM_L6_V2 unpacks it).
import json, sys
import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from math import erf

d = sys.argv[1]
w = {k: v.astype(np.float64) for k, v in load_file(f"{d}/model.safetensors").items() if v.dtype != np.int64}
cfg = json.load(open(f"{d}/config.json"))
tok = Tokenizer.from_file(f"{d}/tokenizer.json")
tok.no_truncation(); tok.no_padding()
H, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
verf = np.vectorize(erf)

def ln(x, p):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w[p + ".weight"] + w[p + ".bias"]

def lin(x, p):
    return x @ w[p + ".weight"].T + w[p + ".bias"]

def embed(text):
    ids = np.array(tok.encode(text).ids)
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    hd = H // heads
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q = lin(x, p + "attention.self.query").reshape(n, heads, hd).transpose(1, 0, 2)
        k = lin(x, p + "attention.self.key").reshape(n, heads, hd).transpose(1, 0, 2)
        v = lin(x, p + "attention.self.value").reshape(n, heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, H)
        x = ln(lin(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + verf(h / np.sqrt(2)))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    e = x.mean(0)
    return ids, e / np.linalg.norm(e)

out = []
for s in ["The cat sits on the mat", "A cat is sitting on a mat", "Stock prices fell sharply"]:
    ids, e = embed(s)
    out.append({"text": s, "ids": [int(i) for i in ids], "embedding": [round(float(v), 7) for v in e]})
json.dump(out, sys.stdout, indent=None)
print()
