"""Settings: one typed tree read by one loader from `csbot.toml`, `CSBOT_*` environment variables and
the defaults in this package — the only place a knob's default is written, each exactly once
(tests/test_settings_defaults.py checks it).

Precedence (highest first): keyword overrides (command-line flags), the environment, the TOML file,
the default here. The TOML file is `$CSBOT_CONFIG` if set, else `./csbot.toml` if present, else
`$CSBOT_HOME/csbot.toml`.

The tree: general fields on `Settings`, and five sections, each a typed dataclass handed on as it is:
`settings.slack` (SlackSettings), `settings.alert` (AlertSettings, sentiment monitoring),
`settings.finetune` (FinetuneSettings, the ingest-time fine-tuning), `settings.retrain`
(RetrainSettings, the nightly retrain) and `settings.compose` (ComposeSettings, composed answers). A
section's field is named, everywhere, `<section>_<field>`:

    TOML   retrain_min_new_examples = 50      or   [retrain]
                                                  min_new_examples = 50
    env    CSBOT_RETRAIN_MIN_NEW_EXAMPLES=50
    code   Settings.load(retrain_min_new_examples=50).retrain.min_new_examples

(a `[csbot]` table holding all of it also works). Slack credentials are read under Slack's own
names too: SLACK_BOT_TOKEN, SLACK_APP_TOKEN, SLACK_SIGNING_SECRET.

Where each knob is written (one module per part; import from `core.settings`, not the modules):

    loader.py             Settings (the root: general parts + sections), Settings.load, replace, to_dict
    general.py            home, models, runtime, threads, seed                  (GeneralSettings)
    serving.py            KB, index, answers, answer_mode, ANSWER_MODES         (ServingSettings)
    store.py              the model store (model_store), retention, writers, database_url, store privacy (StoreSettings)
    slack.py              slack_*                                               (SlackSettings)
    alerts.py             alert_*                                               (AlertSettings)
    compose.py            compose_*                                             (ComposeSettings)
    training/encoder.py   finetune_* and the retrain's encoder stages; the defaults both share
    training/feedback.py  retrain_*: feedback data and its poisoning caps
    training/gate.py      retrain_*: the held-out set, gate_* and keep_rejected
    training/sentiment.py retrain_sentiment_*
    training/composer.py  retrain_composer*
    training/retrain.py   RetrainSettings, composed of the training parts above

The general fields are one flat namespace on `Settings` and the retrain's parts one on
`settings.retrain`: a part is a dataclass that `Settings` or `RetrainSettings` inherits, so every
attribute keeps its name. Where two sections have the same knob (the fine-tune's and the retrain's
batch_size, learning_rate, trainable_layers; the general and the retrain's seed), both names stay
and the default is one module constant both read (training/encoder.py says which).
"""

from core.errors import ConfigError
from core.settings.alerts import AlertSettings
from core.settings.compose import COMPOSE_BACKENDS, ComposeSettings
from core.settings.general import DEFAULT_ENCODER, RUNTIMES, SEED, GeneralSettings, default_home
from core.settings.loader import GENERAL_PARTS, SECTIONS, SLACK_ENV, Settings
from core.settings.serving import ANSWER_MODES, ServingSettings
from core.settings.slack import SLACK_API_URL, SLACK_MAX_SUGGESTED_PROMPTS, SlackSettings
from core.settings.store import DATABASE_SCHEMES, MODEL_STORE_SCHEMES, StoreSettings, model_store_location, without_password
from core.settings.training import LOSSES, RETRAIN_PARTS, FinetuneSettings, RetrainSettings

__all__ = [
    "ANSWER_MODES", "COMPOSE_BACKENDS", "DATABASE_SCHEMES", "DEFAULT_ENCODER", "GENERAL_PARTS", "LOSSES",
    "MODEL_STORE_SCHEMES", "RETRAIN_PARTS", "RUNTIMES", "SECTIONS", "SEED", "SLACK_API_URL", "SLACK_ENV",
    "SLACK_MAX_SUGGESTED_PROMPTS", "AlertSettings", "ComposeSettings", "ConfigError", "FinetuneSettings",
    "GeneralSettings", "RetrainSettings", "ServingSettings", "Settings", "SlackSettings", "StoreSettings",
    "default_home", "model_store_location", "without_password",
]
