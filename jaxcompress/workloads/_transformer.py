"""A small decoder-only character transformer (Flax linen)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one ``qkv`` and one ``proj`` Dense (2-D kernels).

    Attributes:
      num_heads: number of heads; must divide the model width.
    """

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(
                f"CharTransformer: d_model={d} is not divisible by num_heads={self.num_heads}"
            )
        hd = d // self.num_heads
        qkv = nn.Dense(3 * d, name="qkv")(x).reshape((b, t, 3, self.num_heads, hd))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(hd, x.dtype))
        causal = jnp.tril(jnp.ones((t, t), bool))
        logits = jnp.where(causal[None, None], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape((b, t, d))
        return nn.Dense(d, name="proj")(out)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``ln1 -> attn``, ``ln2 -> mlp/fc -> gelu -> mlp/proj``.

    Attributes:
      num_heads: attention heads.
      mlp_ratio: hidden width of the MLP as a multiple of the model width.
    """

    num_heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        x = x + CausalSelfAttention(self.num_heads, name="attn")(nn.LayerNorm(name="ln1")(x))
        h = nn.LayerNorm(name="ln2")(x)
        h = nn.Dense(self.mlp_ratio * d, name="fc")(h)
        h = nn.Dense(d, name="proj")(nn.gelu(h))
        return x + h


class CharTransformer(nn.Module):
    """A GPT-style character model: token + learned position embeddings, ``Block_0 ..
    Block_{n-1}``, a final LayerNorm ``ln_f`` and a ``head`` Dense to the vocabulary.

    Parameter paths are stable for recipe regexes: ``embed/embedding``, ``pos_embed``,
    ``Block_{i}/attn/qkv/kernel``, ``Block_{i}/attn/proj/kernel``, ``Block_{i}/fc/kernel``,
    ``Block_{i}/proj/kernel``, ``Block_{i}/ln1/scale``, ``ln_f/scale``, ``head/kernel`` (and
    the biases). Every kernel is 2-D with the output channel last.

    Attributes:
      vocab_size: number of distinct characters (logits per position).
      d_model: model width.
      num_heads: attention heads (divides ``d_model``).
      num_layers: number of blocks.
      mlp_ratio: MLP hidden width as a multiple of ``d_model``.
      max_len: longest sequence (size of the position embedding).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = CharTransformer(vocab_size=65, d_model=32, num_heads=2, num_layers=2,
      ...                         max_len=16)
      >>> tokens = jnp.zeros((2, 16), jnp.int32)
      >>> params = model.init(jax.random.key(0), tokens)["params"]
      >>> model.apply({"params": params}, tokens).shape
      (2, 16, 65)

    References:
      Vaswani et al. 2017, "Attention Is All You Need"; Radford et al. 2019, "Language Models
      are Unsupervised Multitask Learners" (pre-LayerNorm decoder).
    """

    vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 4
    mlp_ratio: int = 4
    max_len: int = 128

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(
                f"CharTransformer: expected int tokens [batch, seq], got {tokens.shape}"
            )
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"CharTransformer: sequence length {t} exceeds max_len={self.max_len}")
        x = nn.Embed(self.vocab_size, self.d_model, name="embed")(tokens)
        pos = self.param(
            "pos_embed", nn.initializers.normal(stddev=0.02), (self.max_len, self.d_model)
        )
        x = x + pos[None, :t].astype(x.dtype)
        for i in range(self.num_layers):
            x = Block(self.num_heads, self.mlp_ratio, name=f"Block_{i}")(x)
        x = nn.LayerNorm(name="ln_f")(x)
        return nn.Dense(self.vocab_size, name="head")(x)
