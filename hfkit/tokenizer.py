"""Train a tokenizer on the training corpus with the `tokenizers` library, or load an existing one.

Trained tokenizers are wrapped in the transformers class of their model family (BertTokenizer, RobertaTokenizer,
GPT2Tokenizer) so that `tokenizer_config.json` names a class that transformers 4.x can also read; Unigram
tokenizers have no such family class and are saved as the generic fast tokenizer.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from .errors import ModelError

BERT_SPECIALS = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
ROBERTA_SPECIALS = dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>",
                        cls_token="<s>", sep_token="</s>")
CLM_SPECIALS = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<pad>")


def choose_algorithm(requested: str, preset_tokenizer: str) -> str:
    return preset_tokenizer if requested == "auto" else requested


def train_tokenizer(texts: Iterable[str], *, kind: str, family: str, algorithm: str, vocab_size: int,
                    min_frequency: int = 2, lowercase: bool = True, model_max_length: int = 512, show_progress=True):
    """Train a tokenizer for a model of `kind` ("mlm" or "clm") and `family` (bert, roberta, gpt2, llama).

    Returns a transformers fast tokenizer with the special tokens the objective needs: [CLS]/[SEP]/[MASK]-style
    for masked-LM, an end-of-text token (also used as BOS) and a pad token for causal-LM.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "mlm":
        specials = ROBERTA_SPECIALS if algorithm == "bpe" else BERT_SPECIALS
    else:
        specials = CLM_SPECIALS
    special_list = list(dict.fromkeys(specials.values()))

    if algorithm == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=specials["unk_token"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase or None)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=special_list, show_progress=show_progress)
    elif algorithm == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_list,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
    elif algorithm == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special_list,
                                          unk_token=specials["unk_token"], show_progress=show_progress)
    else:
        raise ModelError(f"tokenizer.type: unknown algorithm '{algorithm}'")

    tok.train_from_iterator(_batches(texts), trainer=trainer)
    # Not reproducible across processes: the tokenizers library breaks ties between equally frequent merges in
    # hash-map order, so the same corpus can give slightly different pieces. A resumed run reuses the saved one.
    if tok.get_vocab_size() < len(special_list) + 10:
        raise ModelError(f"the trained tokenizer has only {tok.get_vocab_size()} tokens; the training corpus is too small")

    if kind == "mlm":
        cls_id, sep_id = tok.token_to_id(specials["cls_token"]), tok.token_to_id(specials["sep_token"])
        if algorithm == "bpe":
            tok.post_processor = processors.RobertaProcessing((specials["sep_token"], sep_id), (specials["cls_token"], cls_id),
                                                              trim_offsets=False, add_prefix_space=False)
        else:
            c, s = specials["cls_token"], specials["sep_token"]
            tok.post_processor = processors.TemplateProcessing(single=f"{c} $A {s}", pair=f"{c} $A {s} $B:1 {s}:1",
                                                               special_tokens=[(c, cls_id), (s, sep_id)])
    elif algorithm == "bpe":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)

    wrapper = _wrapper_class(kind, family, algorithm)
    return wrapper(tokenizer_object=tok, model_max_length=model_max_length, **specials)


def _wrapper_class(kind: str, family: str, algorithm: str):
    from transformers import BertTokenizer, GPT2Tokenizer, PreTrainedTokenizerFast, RobertaTokenizer

    if algorithm == "wordpiece" and kind == "mlm":
        return BertTokenizer
    if algorithm == "bpe":
        return RobertaTokenizer if kind == "mlm" else GPT2Tokenizer
    return PreTrainedTokenizerFast


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_tokenizer(path: str, *, revision=None, trust_remote_code=False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"tokenizer: cannot load a tokenizer from '{path}': {str(e).splitlines()[0][:300]}") from None


def ensure_special_tokens(tokenizer, objective: str) -> None:
    """Check (and where harmless, fill in) the special tokens an objective needs."""
    if objective == "mlm" and tokenizer.mask_token is None:
        raise ModelError("objective mlm: this tokenizer has no mask token, so it cannot train a masked-LM; "
                         "use objective: clm or a BERT-style model/tokenizer")
    if objective == "clm" and tokenizer.eos_token is None and tokenizer.sep_token is None:
        raise ModelError("objective clm: this tokenizer has no end-of-text (eos) token to separate documents; "
                         "set tokenizer.path to one that has")
    if tokenizer.pad_token is None:
        # Packed blocks are full except each batch's last block, padded with eos and masked out of the loss.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
