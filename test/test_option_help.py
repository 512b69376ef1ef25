"""Every option of every device kind and of the configuration's own mappings has its help (issue 20, part 2): one or
two sentences saying what it means, its unit and what to set it to, from which docs/devices/<kind>.md is made."""
from filesync import config, docs

CONFIG_OPTIONS = {"top level": config.TOP_LEVEL, "pipelines[]": config.PIPELINE, "ftp_server": config.FTP_SERVER,
                  "ftp_server.users[]": config.FTP_USER, "web": config.WEB}


def declared_options():
    """(where, Option) for every option of every device kind and of the configuration's own mappings."""
    for kind in docs.device_kinds():
        for role, device_class in docs.device_roles(kind):
            for option in docs.device_options(device_class):
                yield f"{kind} {role}", option
    for where, options in CONFIG_OPTIONS.items():
        for option in options:
            yield where, option


def test_every_option_has_help():
    missing = [f"{where}: {option.name}" for where, option in declared_options()
               if not option.help.strip() or not option.help.rstrip().endswith(".")]
    assert not missing, f"options without help (a sentence or two ending with a full stop): {missing}"
