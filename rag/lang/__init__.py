"""The language rules of Chinese reports and policy texts, each in one place with its own table test
(tests/test_lang_*.py, including the cases where it must not fire). Moved here one rule set at a time from
the modules that used to keep their own copies; `rag.text` holds the normal form and sentence ends."""
