"""Simic: observations, actions, the recurrent actor-critic, PPO, rewards and the vectorised env loop."""
