"""Train a tokenizer on the training corpus with the `tokenizers` library, or load an existing one.

Trained tokenizers are wrapped in the transformers class of their model family (BertTokenizer, RobertaTokenizer,
GPT2Tokenizer) so that `tokenizer_config.json` names a class that transformers 4.x can also read; Unigram
tokenizers have no such family class and are saved as the generic fast tokenizer.
"""

from __future__ import annotations

import json
from typing import Iterable

from .errors import ModelError
from .rows import chunked

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

    trainer = None
    if algorithm == "wordpiece":
        # strip_accents None: strip when lowercasing, as BertTokenizer rebuilds it on load (True would save differently)
        normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
        pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        vocab = train_wordpiece_vocab(texts, normalizer, pre_tokenizer, vocab_size=vocab_size,
                                      min_frequency=min_frequency, special_tokens=special_list,
                                      unk_token=specials["unk_token"], show_progress=show_progress)
        # A fresh tokenizer over the trained vocabulary: the trainer's own holds the pinned `##x` as special tokens.
        tok = Tokenizer(models.WordPiece(vocab, unk_token=specials["unk_token"]))
        tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
        tok.decoder = decoders.WordPiece()
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

    if trainer is not None:
        # Byte-level BPE is reproducible (its alphabet is sorted); Unigram is not: tokenizers' trainer sums over
        # words in hash-map order, so two processes can keep slightly different pieces. A resumed run reuses the
        # saved tokenizer; tokenizer.path pins one across runs.
        tok.train_from_iterator(chunked(texts, 1000), trainer=trainer)
    if algorithm == "bpe":
        # transformers' GPT2/RobertaTokenizer rebuild the BPE model on load with "" for these (the trainer leaves
        # None): the same behaviour, but the saved files would differ between a run that trained the tokenizer and
        # one that loaded it (every rank but the first of a multi-process run).
        state = json.loads(tok.to_str())
        state["model"].update(continuing_subword_prefix="", end_of_word_suffix="")
        tok = Tokenizer.from_str(json.dumps(state))
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


def train_wordpiece_vocab(texts: Iterable[str], normalizer, pre_tokenizer, *, vocab_size: int, min_frequency: int,
                          special_tokens: list[str], unk_token: str, show_progress: bool = True) -> dict[str, int]:
    """A WordPiece vocabulary (piece -> id) that is the same for the same corpus and settings in every process.

    tokenizers' WordPieceTrainer (0.23) gives each `##x` continuation symbol its id when it first meets it while
    walking a hash map of words (bpe/trainer.rs, `tokenize_words`), in a different order in every process, and
    breaks ties between equally frequent merges by those ids: two runs of one recipe trained different
    vocabularies. Symbols that are already in its vocabulary keep their ids, and special tokens are put there
    first, in the order given. So every `##x` the corpus can produce is handed to it as a special token, sorted;
    then nothing is left to hash order. The pieces are the trainer's own; only the ids (and so the tie order)
    differ from an unpinned run. `texts` is read twice: pass a list or a datasets column, not a generator, to
    keep a large corpus out of memory.
    """
    from tokenizers import Tokenizer, models, trainers

    if iter(texts) is texts:  # a one-shot iterator (a stream's first documents)
        texts = list(texts)
    chunks: set[str] = set()
    for text in texts:
        chunks.update(text.split())
    later: set[str] = set()  # characters seen after the first of a word, after normalising and splitting
    for chunk in chunks:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(chunk)):
            later.update(word[1:])
    while True:
        pinned = [f"##{c}" for c in sorted(later)]
        tok = Tokenizer(models.WordPiece(unk_token=unk_token))
        tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
        tok.train_from_iterator(chunked(texts, 1000), trainer=trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens + pinned,
            show_progress=show_progress))
        vocab = tok.get_vocab()
        # A character that only joins a word once the whole text is normalised (a control character removed
        # between two words) was not seen above: pin it too and train again.
        missed = {piece[2:] for piece in vocab if len(piece) == 3 and piece.startswith("##")} - later
        if not missed:
            break
        later |= missed
    return vocab


def _wrapper_class(kind: str, family: str, algorithm: str):
    from transformers import BertTokenizer, GPT2Tokenizer, PreTrainedTokenizerFast, RobertaTokenizer

    if algorithm == "wordpiece" and kind == "mlm":
        return BertTokenizer
    if algorithm == "bpe":
        return RobertaTokenizer if kind == "mlm" else GPT2Tokenizer
    return PreTrainedTokenizerFast


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
