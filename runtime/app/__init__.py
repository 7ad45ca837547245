"""The serving side: the tiny model each version app serves, and the Router app that
splits a service's traffic between versions."""
