"""Every option of every device kind and of the configuration's own mappings has its help (issue 20, part 2): one or
two sentences saying what it means, its unit and what to set it to, from which docs/devices/<kind>.md is made."""
from filesync import config
from filesync.devices import SOURCE_KINDS, TARGET_KINDS, source_class, target_class

CONFIG_OPTIONS = {"top level": config.TOP_LEVEL, "pipelines[]": config.PIPELINE, "ftp_server": config.FTP_SERVER,
                  "ftp_server.users[]": config.FTP_USER, "web": config.WEB}


def declared_options():
    """(where, Option) for every option of every device kind and of the configuration's own mappings."""
    for kinds, device_class in ((SOURCE_KINDS, source_class), (TARGET_KINDS, target_class)):
        for kind in kinds:
            cls = device_class(kind, kind)
            for option in cls.OPTIONS + cls.ENGINE_OPTIONS + [cls.transfers_option()]:
                yield f"{kind} {cls.__name__}", option
    for where, options in CONFIG_OPTIONS.items():
        for option in options:
            yield where, option


def test_every_option_has_help():
    missing = [f"{where}: {option.name}" for where, option in declared_options()
               if not option.help.strip() or not option.help.rstrip().endswith(".")]
    assert not missing, f"options without help (a sentence or two ending with a full stop): {missing}"
