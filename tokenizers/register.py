"""Built-in tokenizers and the stage that trains them, registered like any plugin."""

from mmgen.api import hookimpl


@hookimpl
def register_tokenizers(register):
    from .sentencepiece_bpe import SentencePieceBPE
    from .vqgan.tokenizer import VQGANTokenizer

    register(SentencePieceBPE)
    register(VQGANTokenizer)


@hookimpl
def register_stages(register):
    from .stage import TokenizersStage

    register(TokenizersStage)
