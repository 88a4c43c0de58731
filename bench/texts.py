"""Texts the benchmarks and the tests that check their claims share."""

# A text the default model repeats word for word when asked (it does not copy code
# faithfully: it explains it instead), ~180 tokens, so 128 output tokens are all copying.
DOCUMENT = (
    "The lighthouse stood on the northern cliff for two hundred years. Every night the keeper "
    "climbed the spiral stairs, trimmed the wick, and watched the beam sweep across the dark "
    "water. Ships passed safely because of that light, and the villagers slept soundly knowing "
    "it burned. In the winter of the great storm, the waves rose higher than the old stone wall "
    "and the wind tore the shutters from the windows. The keeper stayed at his post for three "
    "days without sleep, feeding the lamp with the last of the oil. When the sky finally "
    "cleared, the fishermen came up the path with bread and coffee, and they found him asleep "
    "in his chair beside the still burning light."
)
