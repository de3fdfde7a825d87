"""Pretrained encoders: ``assets`` (built-in short names, the offline packaged weights), ``architecture`` (what each
architecture's parts are: encoder layers, head modules, LoRA targets, dropout keys), ``loading`` (tokenizer and
sequence-classification model) and ``saving`` (the directories ``from_pretrained`` and ``pipeline()`` load).

May import ``tuneoff.core`` only.
"""
