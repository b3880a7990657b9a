"""Renderers of the PBX configuration the project ships: Asterisk (`sipconfig`, from sip-config/templates)
and FreeSWITCH (`fsconfig`, from freeswitch/templates). Plain functions; the commands are in app/cli.py."""
