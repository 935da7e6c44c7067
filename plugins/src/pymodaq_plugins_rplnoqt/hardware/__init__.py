"""Thin wrappers around one Red Pitaya's modules, with no PyMoDAQ import.

:class:`~.board.Board` is the controller shared by all plugins on a board
(one ``rpl_noqt`` session, input ranges, the on-demand simulator); the
drivers (:mod:`.scope`, :mod:`.asg`, :mod:`.pid`, :mod:`.iq`, :mod:`.sampler`)
validate settings against :mod:`.options` before anything is written.
"""
